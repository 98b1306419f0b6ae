"""The daemon as clients meet it: real daemon processes on loopback, tiny random-weight models."""

from __future__ import annotations

import json
import os
import signal
import stat
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
import torch
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support.daemon import Daemon, daemon_cli, save_tiny, tiny_daemon
from support.models import make_tiny_model

from glcic import ModelMetadata, complete, load_model, new_model, save_model
from glcic.daemon import protocol
from glcic.daemon.protocol import (
    Client,
    ClientError,
    CompletionResult,
    DaemonError,
    DaemonNotRunning,
    context_box,
    read_connection_file,
)
from glcic.daemon.remote import complete_remote
from glcic.daemon.validation import (
    RequestError,
    check_simple_request,
    read_message,
    validate_complete,
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory) -> Daemon:
    with tiny_daemon(tmp_path_factory.mktemp("home")) as running:
        yield running


def _job(seed: int, size: tuple[int, int] = (48, 64)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    height, width = size
    small = rng.integers(0, 255, (4, 4, 4), dtype=np.uint8)
    rgba = np.asarray(Image.fromarray(small, "RGBA").resize((width, height), Image.BICUBIC)).copy()
    mask = np.zeros(size, np.uint8)
    y, x = rng.integers(0, height - 12), rng.integers(0, width - 12)
    mask[y : y + int(rng.integers(4, 12)), x : x + int(rng.integers(4, 12))] = 255
    return rgba, mask


def _remote(client: Client, rgba: np.ndarray, mask: np.ndarray, **options) -> np.ndarray:
    result = client.complete(
        rgba.shape[1], rgba.shape[0], rgba.tobytes(), mask.tobytes(), **options
    )
    out = rgba.copy()
    patch = np.frombuffer(result.rgba, np.uint8).reshape(result.height, result.width, 4)
    out[result.y : result.y + result.height, result.x : result.x + result.width] = patch
    return out


def _raw_socket(connection: protocol.Connection) -> zmq.Socket:
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(connection.address)
    return socket


def _receive(socket: zmq.Socket, timeout_ms: int = 20000) -> tuple[dict, list]:
    assert socket.poll(timeout_ms), "no reply"
    frames = socket.recv_multipart()
    return msgpack.unpackb(frames[1], raw=False), frames[2:]


def test_connection_file_is_private_and_complete(daemon: Daemon) -> None:
    mode = stat.S_IMODE(daemon.connection_file.stat().st_mode)
    assert mode == 0o600
    document = json.loads(daemon.connection_file.read_text())
    assert set(document) == {"protocol", "host", "port", "pid", "key"}
    assert document["host"] == "127.0.0.1" and len(bytes.fromhex(document["key"])) == 32


def test_every_operation_round_trips(daemon: Daemon) -> None:
    client = daemon.client()
    assert client.ping()["pong"] is True
    status = client.status()
    assert status["default_model"] == "tiny" and status["device"] == "cpu"
    assert status["precision"].startswith("float32 (")  # auto: bf16 completion not validated
    assert {
        "pid",
        "address",
        "loaded_models",
        "queue_length",
        "requests_served",
        "uptime_s",
    } <= set(status)
    models = {model["name"]: model for model in client.models()}
    tiny = models["tiny"]
    assert tiny["default"] and not tiny["builtin"] and tiny["metadata"]["width"] == 0.125
    assert set(models) <= {"tiny", "default"}  # plus the packaged model, never the default here
    assert "default" not in models or not models["default"]["default"]
    rgba, mask = _job(1)
    seen = []
    remote = _remote(client, rgba, mask, progress=lambda s, f: seen.append(s))
    local = complete(rgba, mask, make_tiny_model(0))
    assert np.array_equal(remote, local)
    assert "queued" in seen and "network" in seen
    assert "models" in client.reload()
    with pytest.raises(DaemonError) as error:
        client.cancel("no-such-request")
    assert error.value.code == protocol.NOT_FOUND


def test_precision_is_chosen_at_start_shown_and_used(tmp_path: Path) -> None:
    refused = daemon_cli(tmp_path, "start", "--precision", "float16")
    assert refused.returncode == 2 and "invalid choice: 'float16'" in refused.stderr
    save_tiny(tmp_path, "tiny")
    running = Daemon(tmp_path, "--model", "tiny", "--device", "cpu", "--precision", "bfloat16")
    running.start()
    try:
        client = running.client()
        assert client.status()["precision"] == "bfloat16 (asked for)"
        assert "precision bfloat16 (asked for)" in daemon_cli(tmp_path, "status").stdout
        assert "precision bfloat16" in running.log()
        rgba, mask = _job(3)
        model = load_model(tmp_path / "models" / "tiny.safetensors", precision="bfloat16")
        expected = complete(rgba, mask, model)
        assert np.array_equal(_remote(client, rgba, mask), expected)
    finally:
        running.stop()


def test_result_is_only_the_changed_rectangle(daemon: Daemon) -> None:
    rgba, _ = _job(2, size=(64, 64))
    mask = np.zeros((64, 64), np.uint8)
    mask[10:20, 30:36] = 255
    client = daemon.client()
    result = client.complete(64, 64, rgba.tobytes(), mask.tobytes())
    assert (result.x, result.y, result.width, result.height) == (30, 10, 6, 10)
    assert len(result.rgba) == 6 * 10 * 4


def test_eight_concurrent_clients_get_their_own_replies(daemon: Daemon) -> None:
    model = make_tiny_model(0)
    expected = {seed: complete(*_job(seed), model) for seed in range(80)}
    failures: list[str] = []

    def worker(index: int) -> None:
        client = daemon.client(timeout=60)
        try:
            for seed in range(index * 10, index * 10 + 10):
                if not np.array_equal(_remote(client, *_job(seed)), expected[seed]):
                    failures.append(f"client {index}, request {seed}: wrong pixels")
        except Exception as error:
            failures.append(f"client {index}: {error!r}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not failures, failures


def test_unsigned_and_wrongly_signed_requests_are_refused(daemon: Daemon) -> None:
    connection = read_connection_file(daemon.connection_file)
    socket = _raw_socket(connection)
    header = msgpack.packb({"v": 1, "id": "x1", "op": "ping"})
    for signature in (b"", b"0" * 64, protocol.sign(b"another key", [header])):
        socket.send_multipart([signature, header])
        reply, _ = _receive(socket)
        assert reply["type"] == "error" and reply["code"] == protocol.UNAUTHORIZED
        assert reply["id"] == "x1"
    # A correct signature over other frames (payload appended afterwards) is refused too.
    frames = protocol.pack(connection.key, {"v": 1, "id": "x2", "op": "ping"})
    socket.send_multipart([*frames, b"smuggled"])
    assert _receive(socket)[0]["code"] == protocol.UNAUTHORIZED
    socket.close()


def _send_signed(socket, key: bytes, header: dict, payload=()) -> dict:
    socket.send_multipart(protocol.pack(key, header, payload))
    while True:
        reply, _ = _receive(socket)
        if reply.get("type") != "progress":
            return reply


def test_bad_requests_get_the_right_codes(daemon: Daemon) -> None:
    connection = read_connection_file(daemon.connection_file)
    socket = _raw_socket(connection)
    key = connection.key

    def code(header: dict, payload=()) -> str:
        return _send_signed(socket, key, {"v": 1, "id": "r", **header}, payload).get("code")

    assert code({"op": "complete", "width": 20000, "height": 10}, [b"", b""]) == protocol.TOO_LARGE
    assert (
        code({"op": "complete", "width": 4, "height": 4}, [b"\0" * 63, b"\0" * 16])
        == protocol.BAD_REQUEST
    )
    assert code({"op": "complete", "width": 4, "height": 4}, [b"\0" * 64]) == protocol.BAD_REQUEST
    assert (
        code({"op": "complete", "width": "4", "height": 4}, [b"\0" * 64, b"\0" * 16])
        == protocol.BAD_REQUEST
    )
    assert (
        code({"op": "complete", "width": 4, "height": 4, "model": "nope"}, [b"\0" * 64, b"\0" * 16])
        == protocol.UNKNOWN_MODEL
    )
    assert (
        code({"op": "complete", "width": 4, "height": 4, "blend": "x"}, [b"\0" * 64, b"\0" * 16])
        == protocol.BAD_REQUEST
    )
    assert (
        code({"op": "complete", "width": 4, "height": 4}, [b"\0" * 64, b"\0" * 16])
        == protocol.BAD_INPUT
    )  # empty mask
    assert code({"op": "dance"}) == protocol.BAD_REQUEST
    assert code({"op": "ping"}, [b"payload"]) == protocol.BAD_REQUEST
    assert (
        _send_signed(socket, key, {"v": 99, "id": "r", "op": "ping"})["code"]
        == protocol.VERSION_MISMATCH
    )
    socket.close()
    assert daemon.client().ping()["pong"]


class _Models:
    """The model catalogue validation asks about, without loading anything."""

    directory = Path("/nowhere/models")

    def __init__(self, names: tuple[str, ...] = ("tiny",), default: str | None = "tiny") -> None:
        self.names, self.default = names, default

    def exists(self, name: str) -> bool:
        return name in self.names

    def default_name(self) -> str | None:
        return self.default


_FRAMES_4X4 = [b"\0" * 64, b"\0" * 16]


def _validate(header: dict, payload=_FRAMES_4X4, models: _Models | None = None):
    return validate_complete(
        {"v": 1, "id": "r", "op": "complete", **header}, payload, models or _Models(),
        identity=b"me", max_side=1000, timeout=30.0,
    )  # fmt: skip


def test_a_valid_complete_request_becomes_a_job_without_a_socket() -> None:
    job = _validate({"width": 4, "height": 4, "keepalive": 2, "model": "tiny", "blend": "none"})
    assert (job.request_id, job.identity, job.width, job.height) == ("r", b"me", 4, 4)
    assert (job.model, job.blend, job.timeout, job.keepalive) == ("tiny", "none", 30.0, 2.0)
    assert bytes(job.pixels) == _FRAMES_4X4[0] and bytes(job.mask) == _FRAMES_4X4[1]
    job = _validate({"width": 4, "height": 4})
    assert (job.model, job.blend, job.keepalive) == (None, "poisson", None)


@pytest.mark.parametrize(
    ("header", "payload", "models", "code", "words"),
    [
        ({"width": "4", "height": 4}, _FRAMES_4X4, None, protocol.BAD_REQUEST, "integers"),
        ({"width": True, "height": 4}, _FRAMES_4X4, None, protocol.BAD_REQUEST, "integers"),
        ({"width": 0, "height": 4}, [b"", b""], None, protocol.BAD_REQUEST, "empty"),
        ({"width": 1001, "height": 4}, _FRAMES_4X4, None, protocol.TOO_LARGE, "1000x1000"),
        ({"width": 4, "height": 4}, _FRAMES_4X4[:1], None, protocol.BAD_REQUEST, "got 1"),
        ({"width": 4, "height": 4}, [b"\0" * 63, b"\0" * 16], None, protocol.BAD_REQUEST, "pixel"),
        ({"width": 4, "height": 4}, [b"\0" * 64, b"\0" * 15], None, protocol.BAD_REQUEST, "mask"),
        ({"width": 4, "height": 4, "blend": "x"}, _FRAMES_4X4, None, protocol.BAD_REQUEST, "blend"),
        ({"width": 4, "height": 4, "model": "nope"}, _FRAMES_4X4, None, protocol.UNKNOWN_MODEL,
         "'nope'"),
        ({"width": 4, "height": 4, "model": 3}, _FRAMES_4X4, None, protocol.UNKNOWN_MODEL, "3"),
        ({"width": 4, "height": 4}, _FRAMES_4X4, _Models((), None), protocol.NO_MODEL,
         "/nowhere/models"),
        ({"width": 4, "height": 4, "keepalive": 0.01}, _FRAMES_4X4, None, protocol.BAD_REQUEST,
         "keepalive"),
        ({"width": 4, "height": 4, "keepalive": True}, _FRAMES_4X4, None, protocol.BAD_REQUEST,
         "keepalive"),
    ],
)  # fmt: skip
def test_bad_complete_requests_are_refused_without_a_socket(
    header, payload, models, code, words
) -> None:
    with pytest.raises(RequestError, match=words) as refused:
        _validate(header, payload, models)
    assert refused.value.code == code


def test_messages_are_checked_before_dispatch_without_a_socket() -> None:
    key = b"k" * 32
    frames = protocol.pack(key, {"v": 1, "id": "a", "op": "ping"}, [b"x"])
    for given_frames in (frames, [zmq.Frame(frame) for frame in frames]):  # bytes or zero-copy
        header, payload = read_message(key, given_frames)
        assert header["op"] == "ping" and [bytes(frame) for frame in payload] == [b"x"]

    def refusal(frames: list) -> tuple[str, object]:
        with pytest.raises(RequestError) as refused:
            read_message(key, frames)
        return refused.value.code, refused.value.request_id

    assert refusal([b"signature only"]) == (protocol.BAD_REQUEST, None)
    oversized = msgpack.packb({"v": 1, "id": "big", "op": "ping", "pad": "x" * 70000})
    assert refusal([protocol.sign(key, [oversized]), oversized]) == (protocol.BAD_REQUEST, None)
    signed_elsewhere = protocol.pack(b"another key", {"v": 1, "id": "b", "op": "ping"})
    assert refusal(signed_elsewhere) == (protocol.UNAUTHORIZED, "b")
    assert refusal([protocol.sign(key, [b"\x93"]), b"\x93"]) == (protocol.BAD_REQUEST, None)
    assert refusal(protocol.pack(key, {"v": 99, "id": "c"})) == (protocol.VERSION_MISMATCH, "c")
    assert refusal(protocol.pack(key, {"v": 1, "id": 7})) == (protocol.BAD_REQUEST, 7)
    assert refusal(protocol.pack(key, {"v": 1})) == (protocol.BAD_REQUEST, None)
    check_simple_request("ping", [])
    with pytest.raises(RequestError, match="no payload") as refused:
        check_simple_request("ping", [b"payload"])
    assert refused.value.code == protocol.BAD_REQUEST


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True),
    st.text(max_size=20), st.binary(max_size=20),
)  # fmt: skip
_headers = st.fixed_dictionaries(
    {},
    optional={
        "v": st.one_of(st.just(1), _scalars),
        "id": st.one_of(st.text(min_size=1, max_size=10), _scalars),
        "op": st.one_of(
            st.sampled_from(["ping", "status", "models", "complete", "cancel", "reload", "bogus"]),
            _scalars,
        ),
        "width": st.one_of(st.integers(-2, 6), _scalars),
        "height": st.one_of(st.integers(-2, 6), _scalars),
        "model": _scalars,
        "blend": st.one_of(st.sampled_from(["poisson", "none"]), _scalars),
        "target": _scalars,
    },
)
_messages = st.one_of(
    st.lists(st.binary(max_size=64), min_size=1, max_size=5),  # raw, usually unsigned frames
    st.tuples(_headers, st.lists(st.binary(max_size=160), max_size=3)),  # signed, valid msgpack
)


def test_fuzzed_frames_and_headers_never_stop_the_daemon(daemon: Daemon) -> None:
    connection = read_connection_file(daemon.connection_file)
    socket = _raw_socket(connection)
    answered = 0

    @settings(max_examples=1000, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(_messages)
    def one_message(message) -> None:
        nonlocal answered
        if isinstance(message, tuple):
            header, payload = message
            try:
                frames = protocol.pack(connection.key, header, payload)
            except (TypeError, ValueError, OverflowError):
                return
        else:
            frames = message
        socket.send_multipart(frames)
        while True:  # every message gets a final reply: a result, a reply or an error
            reply, _ = _receive(socket)
            if reply.get("type") != "progress":
                break
        answered += 1

    one_message()
    socket.close()
    assert answered >= 900
    client = daemon.client()
    assert client.ping()["pong"]
    assert client.status()["pid"] == daemon.pid()


def test_busy_queue_cancel_and_timeout(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # A half-width model makes each job take seconds, far longer than a cancel's round trip.
    torch.manual_seed(0)
    save_model(new_model(ModelMetadata(width=0.5)), home / "models" / "slow.safetensors")
    save_tiny(home, "tiny")
    running = Daemon(home, "--max-queue", "1", "--model", "slow")
    running.start()
    try:
        connection = read_connection_file(running.connection_file)
        socket = _raw_socket(connection)
        size = 3000
        mask = np.zeros((size, size), np.uint8)
        # 36 holes too far apart to merge, each of another size: crops of different sizes run
        # as separate batches, so a long job with points between them where a cancel acts.
        for index in range(36):
            y, x = 100 + 500 * (index // 6), 100 + 500 * (index % 6)
            side = 10 + 3 * index
            mask[y : y + side, x : x + side] = 255
        pixels = np.full((size, size, 4), 120, np.uint8).tobytes()

        def send(header: dict, payload=()) -> None:
            socket.send_multipart(protocol.pack(connection.key, {"v": 1, **header}, payload))

        job = {"op": "complete", "width": size, "height": size}
        for request_id in ("a", "b", "c"):
            send({"id": request_id, **job}, [pixels, mask.tobytes()])
        finals: dict[str, dict] = {}
        cancelled_a = False
        while len(finals) < 4:
            reply, _ = _receive(socket, 120000)
            if reply["id"] == "b" and reply.get("stage") == "queued":
                send({"id": "cancel-b", "op": "cancel", "target": "b"})
            if reply["id"] == "a" and reply.get("stage") == "network" and not cancelled_a:
                send({"id": "cancel-a", "op": "cancel", "target": "a"})  # a is running
                cancelled_a = True
            if reply.get("type") != "progress" and reply["id"] in ("a", "b", "c", "cancel-a"):
                finals[reply["id"]] = reply
        assert finals["c"]["code"] == protocol.BUSY
        assert finals["b"]["code"] == protocol.CANCELLED
        assert finals["a"]["code"] == protocol.CANCELLED
        assert finals["cancel-a"]["state"] == "running"
        socket.close()
        # The daemon is still fine.
        assert np.array_equal(_remote(running.client(), *_job(3), model="tiny"),
                              complete(*_job(3), make_tiny_model(0)))  # fmt: skip
    finally:
        running.stop()

    timed = Daemon(home, "--timeout", "0.000001", "--model", "tiny")
    timed.start()
    try:
        with pytest.raises(DaemonError) as error:
            _remote(timed.client(), *_job(3))
        assert error.value.code == protocol.TIMEOUT
        assert timed.client().ping()["pong"]
    finally:
        timed.stop()


def _many_holes_job(size: int = 3000) -> tuple[bytes, bytes]:
    """A job of many separate crops: seconds with a half-width model, with stops between."""
    mask = np.zeros((size, size), np.uint8)
    for index in range(36):
        y, x = 100 + 500 * (index // 6), 100 + 500 * (index % 6)
        side = 10 + 3 * index
        mask[y : y + side, x : x + side] = 255
    return np.full((size, size, 4), 120, np.uint8).tobytes(), mask.tobytes()


def test_requests_of_a_client_that_stopped_sending_alive_are_dropped(tmp_path: Path) -> None:
    """A host that kills its plug-in (GIMP on Cancel) leaves requests nobody will read: the
    daemon drops them, running and queued, once their `alive` messages stop."""
    home = tmp_path / "home"
    torch.manual_seed(0)
    save_model(new_model(ModelMetadata(width=0.5)), home / "models" / "slow.safetensors")
    running = Daemon(home, "--model", "slow")
    running.start()
    try:
        connection = read_connection_file(running.connection_file)
        socket = _raw_socket(connection)
        pixels, mask = _many_holes_job()

        def send(header: dict, payload=()) -> None:
            socket.send_multipart(protocol.pack(connection.key, {"v": 1, **header}, payload))

        job = {"op": "complete", "width": 3000, "height": 3000, "keepalive": 0.2}
        send({"id": "bad", **job, "keepalive": 0}, [pixels, mask])
        send({"id": "a", **job}, [pixels, mask])  # runs; no `alive` will ever follow
        send({"id": "b", **job}, [pixels, mask])  # waits behind it
        finals: dict[str, dict] = {}
        started = time.monotonic()
        while len(finals) < 3:
            reply, _ = _receive(socket, 120000)
            if reply.get("type") != "progress":
                finals[reply["id"]] = reply
        assert (
            finals["bad"]["code"] == protocol.BAD_REQUEST
            and "keepalive" in finals["bad"]["message"]
        )
        for request_id in ("a", "b"):
            assert finals[request_id]["code"] == protocol.CANCELLED, finals[request_id]
            assert "alive" in finals[request_id]["message"]
        socket.close()
        # A client that keeps sending them (the thin client does, every 0.2 s here) is served
        # however long its job takes.
        client = running.client(timeout=120)
        result = client.complete(3000, 3000, pixels, mask, keepalive=0.2, timeout=300)
        assert result.width > 0 and result.height > 0
        log = running.log()
        # Whether the worker or the queue sweep drops a job first is a race; either is right,
        # as long as neither abandoned job ran to completion.
        for request_id in ("a", "b"):
            assert (
                f"dropped {request_id}: its client is gone" in log
                or f"dropped queued {request_id}: its client is gone" in log
            )
            assert f"completed {request_id}:" not in log
        assert time.monotonic() - started < 300
    finally:
        running.stop()


def test_hot_reload_and_a_corrupt_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    save_tiny(home, "tiny", seed=0)
    running = Daemon(home, "--model", "tiny")
    running.start()
    try:
        client = running.client()
        rgba, mask = _job(5)
        before = _remote(client, rgba, mask)
        # A new model file dropped in (atomically) is usable at the next request.
        save_tiny(home, "second", seed=1)
        assert np.array_equal(
            _remote(client, rgba, mask, model="second"), complete(rgba, mask, make_tiny_model(1))
        )
        # The default model replaced by a newer version: used from the next request.
        save_tiny(home, "tiny", seed=2)
        assert np.array_equal(_remote(client, rgba, mask), complete(rgba, mask, make_tiny_model(2)))
        # A corrupt file: reported, and the previous version stays in service.
        path = home / "models" / "tiny.safetensors"
        temporary = home / "models" / ".tiny.tmp"
        temporary.write_bytes(b"not a model at all")
        os.replace(temporary, path)
        client.reload()
        status = client.status()
        assert (
            "tiny" in status["model_errors"]
            and "not a glcic model file" in status["model_errors"]["tiny"]
        )
        assert np.array_equal(_remote(client, rgba, mask), complete(rgba, mask, make_tiny_model(2)))
        assert not np.array_equal(before, complete(rgba, mask, make_tiny_model(2)))
        assert "failed to load" in running.log()
    finally:
        running.stop()


def test_sigkill_then_start_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    save_tiny(home, "tiny")
    running = Daemon(home)
    running.start()
    old_pid = running.pid()
    os.kill(old_pid, signal.SIGKILL)
    time.sleep(0.5)
    assert running.connection_file.exists()  # stale, left behind
    with pytest.raises(ClientError):  # the stale file points at a dead daemon
        Client(running.connection_file, timeout=1.0).ping()
    result = running.start()
    try:
        assert "started" in result.stdout
        assert running.pid() != old_pid
        assert running.client().ping()["pong"]
    finally:
        running.stop()


def test_second_start_reports_the_running_one_and_sigterm_cleans_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    save_tiny(home, "tiny")
    running = Daemon(home)
    running.start()
    again = running.start()
    assert "already running" in again.stdout
    pid = running.pid()
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not running.connection_file.exists():
            break
        time.sleep(0.1)
    assert not running.connection_file.exists()
    result = daemon_cli(home, "status")
    assert result.returncode == 2 and "not running" in result.stderr


def test_cli_complete_through_the_daemon(daemon: Daemon, tmp_path: Path) -> None:
    rgba, mask = _job(7, size=(60, 80))
    Image.fromarray(rgba[..., :3]).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    result = daemon_cli(
        daemon.home,
        "complete",
        str(tmp_path / "in.png"),
        str(tmp_path / "mask.png"),
        str(tmp_path / "out.png"),
    )
    assert result.returncode == 0, result.stderr
    local = complete(rgba[..., :3].copy(), mask, make_tiny_model(0))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), local)
    models = daemon_cli(daemon.home, "models")
    assert models.returncode == 0 and "* tiny" in models.stdout


def test_without_a_daemon_clients_get_a_clear_message(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="glcic-daemon start"):
        Client(tmp_path / "run" / "daemon.json")
    result = daemon_cli(tmp_path, "complete", "a.png", "b.png", "c.png")
    assert result.returncode == 2 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "boxes",
    [
        [(900, 1100, 1400, 1700)],  # one hole in the middle of a large photo
        [(0, 40, 0, 60), (1950, 2000, 2900, 3000)],  # holes at opposite corners
        [(300, 700, 500, 1100)],  # a hole larger than the trained size: scaled
        [(10, 20, 10, 20), (60, 70, 80, 90)],  # close holes, merged
    ],
)
def test_remote_region_requests_give_the_whole_image_result(daemon: Daemon, boxes) -> None:
    rng = np.random.default_rng(11)
    small = rng.integers(0, 255, (8, 12, 4), dtype=np.uint8)
    rgba = np.asarray(Image.fromarray(small, "RGBA").resize((3000, 2000), Image.BICUBIC)).copy()
    mask = np.zeros((2000, 3000), np.uint8)
    for y0, y1, x0, x1 in boxes:
        mask[y0:y1, x0:x1] = 255
    region = complete_remote(daemon.client(timeout=120), rgba, mask)
    expected = complete(rgba, mask, make_tiny_model(0))
    height, width = region.pixels.shape[:2]
    out = rgba.copy()
    out[region.y : region.y + height, region.x : region.x + width] = region.pixels
    assert np.array_equal(out, expected)


class _RecordingClient:
    """Stands in for a Client: one model, and `complete` keeps what it was sent."""

    def __init__(self, metadata: dict | None) -> None:
        self.metadata = metadata
        self.sent: tuple[int, int, bytes, bytes] | None = None

    def models(self) -> list[dict]:
        return [{"name": "tiny", "default": True, "loaded": True, "metadata": self.metadata}]

    def complete(self, width, height, rgba, mask, model=None, blend="poisson", **options):
        self.sent = (width, height, rgba, mask)
        return CompletionResult(3, 5, 2, 1, bytes(2 * 1 * 4), "tiny", 0.0)


@pytest.mark.parametrize(
    "boxes",
    [[(300, 340, 500, 560)], [(0, 10, 0, 10)], [(20, 40, 30, 60), (200, 260, 300, 370)]],
)
def test_the_cli_path_sends_the_context_box_of_the_holes(boxes) -> None:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (1200, 1600, 4), dtype=np.uint8)
    mask = np.zeros((1200, 1600), np.uint8)
    for top, bottom, left, right in boxes:
        mask[top:bottom, left:right] = 255
    ys, xs = np.nonzero(mask)
    holes = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    x0, y0, x1, y1 = context_box(holes, (1600, 1200), 128)
    assert (x1 - x0) * (y1 - y0) < 1600 * 1200  # only part of the image goes out
    client = _RecordingClient({"hole_size_range": [96, 128]})
    region = complete_remote(client, rgba, mask)
    expected = rgba[y0:y1, x0:x1].tobytes(), mask[y0:y1, x0:x1].tobytes()
    assert client.sent == (x1 - x0, y1 - y0, *expected)
    assert (region.x, region.y, region.pixels.shape) == (x0 + 3, y0 + 5, (1, 2, 4))


def test_the_cli_path_sends_everything_when_it_cannot_bound_the_reads() -> None:
    rgba = np.zeros((40, 50, 4), np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    client = _RecordingClient({"hole_size_range": [16, 64]})
    complete_remote(client, rgba, mask)  # an empty mask: the daemon explains
    assert client.sent[:2] == (50, 40)
    mask[10:20, 10:20] = 255
    client = _RecordingClient(None)  # a model without metadata: its hole size is unknown
    complete_remote(client, rgba, mask)
    assert client.sent[:2] == (50, 40)


def test_model_file_overwritten_in_place_or_unreadable_keeps_the_daemon_serving(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    path = save_tiny(home, "tiny")
    running = Daemon(home, "--model", "tiny")
    running.start()
    try:
        client = running.client()
        rgba, mask = _job(9)
        expected = complete(rgba, mask, make_tiny_model(0))
        data = path.read_bytes()
        with open(path, "r+b") as handle:  # a copy over the file, caught half way
            handle.truncate(len(data) // 2)
        client.reload()
        assert "truncated" in client.status()["model_errors"]["tiny"]
        assert np.array_equal(_remote(client, rgba, mask), expected)
        loop = home / "models" / "loop.safetensors"
        loop.symlink_to(loop)  # a symlink loop: stat() fails with ELOOP
        client.reload()
        assert "loop" in client.status()["model_errors"]
        assert np.array_equal(_remote(client, rgba, mask), expected)
        with pytest.raises(DaemonError) as error:  # a name too long for the file system
            _remote(client, rgba, mask, model="x" * 300)
        assert error.value.code == protocol.UNKNOWN_MODEL
        assert client.ping()["pid"] == running.pid()
    finally:
        running.stop()


def test_connection_file_readable_by_others_is_refused(daemon: Daemon) -> None:
    daemon.connection_file.chmod(0o644)
    try:
        with pytest.raises(DaemonNotRunning, match="readable by you only"):
            daemon.client()
    finally:
        daemon.connection_file.chmod(0o600)
