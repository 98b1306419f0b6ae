"""The daemon as clients meet it: real daemon processes on loopback, tiny random-weight models."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from contextlib import suppress
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from support.daemon import (
    Daemon,
    daemon_cli,
    many_holes_job,
    save_slow_model,
    save_tiny,
    tiny_daemon,
)
from support.models import make_tiny_model
from zmq.utils import z85

from glcic import complete, load_model
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
from glcic.precision import resolve_precision


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
    """A DEALER with the connection file's keys, sending whatever a test builds."""
    return connection.socket(zmq.Context.instance())


def _receive(socket: zmq.Socket, timeout_ms: int = 20000) -> tuple[dict, list]:
    assert socket.poll(timeout_ms), "no reply"
    frames = socket.recv_multipart()
    return msgpack.unpackb(frames[0], raw=False), frames[1:]


def test_connection_file_is_private_and_complete(daemon: Daemon) -> None:
    mode = stat.S_IMODE(daemon.connection_file.stat().st_mode)
    assert mode == 0o600
    document = json.loads(daemon.connection_file.read_text())
    assert set(document) == {"protocol", "host", "port", "pid", "server_key", "client_key", "key"}
    assert document["host"] == "127.0.0.1" and document["protocol"] == protocol.PROTOCOL_VERSION
    keys = [bytes.fromhex(document[name]) for name in ("server_key", "client_key", "key")]
    assert all(len(key) == 32 for key in keys) and len(set(keys)) == 3
    # The client's secret key is the one its public key comes from.
    assert zmq.curve_public(z85.encode(keys[2])) == z85.encode(keys[1])


def test_every_operation_round_trips(daemon: Daemon) -> None:
    client = daemon.client()
    assert client.ping()["pong"] is True
    status = client.status()
    assert status["default_model"] == "tiny" and status["device"] == "cpu"
    assert status["precision"] == "float32 (asked for)"  # as every test daemon, unless told
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
    # auto gets what this machine's CPU earns: bf16 only with bf16 instructions and a faster probe
    running = Daemon(tmp_path, "--model", "tiny", "--device", "cpu", "--precision", "auto")
    running.start()
    try:
        expected_name = resolve_precision("auto", "cpu", "completion").name
        assert running.client().status()["precision"].startswith(f"{expected_name} (")
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


# -- peers without the keys (issue 17, items 1 and 2) ------------------------------------------


def _curve_socket(connection: protocol.Connection, server_key: bytes, client_pair) -> zmq.Socket:
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.curve_serverkey = server_key
    dealer.curve_publickey, dealer.curve_secretkey = client_pair
    dealer.connect(connection.address)
    return dealer


def test_peers_without_the_keys_get_no_message_in(daemon: Daemon) -> None:
    """Protocol 1 answered anyone with `unauthorized`; now a peer without the connection
    file's keys never gets a message through, so nothing at all comes back."""
    connection = read_connection_file(daemon.connection_file)
    ping = msgpack.packb({"v": protocol.PROTOCOL_VERSION, "id": "p", "op": "ping"})

    def answered(stranger: zmq.Socket) -> bool:
        try:
            stranger.send_multipart([ping])
            stranger.send_multipart([b"0" * 64, ping])  # protocol 1's [signature, header] too
            return bool(stranger.poll(3000))
        finally:
            stranger.close()

    plain = zmq.Context.instance().socket(zmq.DEALER)  # no encryption at all
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(connection.address)
    assert not answered(plain)
    # The daemon's public key, but a client key of its own: the ZAP handler refuses it.
    assert not answered(_curve_socket(connection, connection.server_key, zmq.curve_keypair()))
    # The client's keys, but another server key: the handshake fails.
    other_server = zmq.curve_keypair()[0]
    assert not answered(_curve_socket(connection, other_server, (connection.client_key, b"x" * 32)))
    assert daemon.client().ping()["pong"]
    assert "refused connections with an unknown key" in daemon.log()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc")


def _stream_frames(port: int, mechanism: bytes, frames: list[tuple[int, int]]) -> None:
    """A raw ZMTP 3.0 peer: a greeting with `mechanism`, for NULL the READY a DEALER sends,
    then frames of (size, flags) full of zeros, streamed from one 1 MiB buffer, until the
    daemon hangs up."""
    greeting = b"\xff" + bytes(8) + b"\x7f" + bytes([3, 0]) + mechanism.ljust(20, b"\0")
    ready = b"\x05READY\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    chunk = bytes(1 << 20)
    with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=30) as peer:
        peer.sendall(greeting + bytes(32))
        if mechanism == b"NULL":
            peer.sendall(bytes([0x04, len(ready)]) + ready)
        for size, flags in frames:
            peer.sendall(bytes([flags | 0x02]) + struct.pack(">Q", size))  # 0x02: 8-byte size
            for _ in range(size // len(chunk)):
                peer.sendall(chunk)
        time.sleep(1.0)


def test_a_keyless_peer_cannot_make_the_daemon_hold_a_big_message(daemon: Daemon) -> None:
    """Protocol 1 let any local user send one unsigned two-frame message of up to 2 x 1 GiB,
    which ZeroMQ received whole before the signature was checked. Now no frame, a CURVE
    handshake command included, may exceed MAX_FRAME_BYTES, and nothing but the handshake
    comes before the keys are checked."""
    connection = read_connection_file(daemon.connection_file)
    before = _peak_rss_mb(connection.pid)
    size = 256 << 20
    # An unencrypted DEALER's two-frame message (0x01: more frames follow) ...
    _stream_frames(connection.port, b"NULL", [(size, 0x01), (size, 0x00)])
    # ... and a peer that announces CURVE, then sends huge handshake commands (0x04).
    _stream_frames(connection.port, b"CURVE", [(size, 0x04), (size, 0x04)])
    assert _peak_rss_mb(connection.pid) - before < 50  # 512 MB more, before
    assert daemon.client().ping()["pid"] == connection.pid


class _Recorder:
    """A TCP relay to the daemon that keeps every byte its one client sent."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sent = bytearray()
        self.done = threading.Event()
        threading.Thread(target=self._relay, daemon=True).start()

    def _relay(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.target))
        threading.Thread(target=self._pump, args=(upstream, client, None), daemon=True).start()
        self._pump(client, upstream, self.sent)
        self.done.set()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, keep: bytearray | None) -> None:
        with suppress(OSError):
            while data := source.recv(1 << 16):
                if keep is not None:
                    keep += data
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def _replay(port: int, recorded: bytes) -> None:
    """Send what a client sent, paced as it was: the greeting, then each handshake command
    (ZMTP frames flagged 0x04) once the daemon has answered the one before, then the rest."""
    pieces, index = [recorded[:64]], 64
    while index < len(recorded) and recorded[index] & 0x04:
        if recorded[index] & 0x02:  # an 8-byte size
            head, size = 9, int.from_bytes(recorded[index + 1 : index + 9], "big")
        else:
            head, size = 2, recorded[index + 1]
        pieces.append(recorded[index : index + head + size])
        index += head + size
    pieces.append(recorded[index:])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as replay, suppress(OSError):
        replay.settimeout(0.5)
        for piece in pieces:
            replay.sendall(piece)
            with suppress(TimeoutError):
                replay.recv(1 << 16)  # the daemon's greeting or handshake answer
        replay.settimeout(5)
        while replay.recv(1 << 16):  # whatever comes back, until the daemon hangs up
            pass


def test_a_request_captured_on_the_wire_does_not_run_again(daemon: Daemon, tmp_path) -> None:
    """A `complete` request recorded between a client and the daemon, replayed byte for byte
    from another socket: CURVE's handshake makes session keys afresh for every connection (the
    daemon's cookie changes), so the replay never gets a message through."""
    connection = read_connection_file(daemon.connection_file)
    recorder = _Recorder(connection.port)
    document = json.loads(daemon.connection_file.read_text())
    relayed = tmp_path / "daemon.json"  # the same daemon, reached through the recorder
    relayed.write_text(json.dumps({**document, "port": recorder.port}))
    relayed.chmod(0o600)
    rgba, mask = _job(4)
    with Client(relayed, timeout=20) as client:
        assert client.complete(rgba.shape[1], rgba.shape[0], rgba.tobytes(), mask.tobytes())
    assert recorder.done.wait(20) and len(recorder.sent) > rgba.nbytes
    served = daemon.client().status()["requests_served"]
    completed = daemon.log().count("completed ")
    _replay(connection.port, bytes(recorder.sent))
    time.sleep(3)  # time enough for a replayed job to run (it takes milliseconds)
    assert daemon.client().status()["requests_served"] == served
    assert daemon.log().count("completed ") == completed


def _send(socket, header: dict, payload=()) -> dict:
    socket.send_multipart(protocol.pack(header, payload))
    while True:
        reply, _ = _receive(socket)
        if reply.get("type") != "progress":
            return reply


def test_bad_requests_get_the_right_codes(daemon: Daemon) -> None:
    connection = read_connection_file(daemon.connection_file)
    socket = _raw_socket(connection)
    version = protocol.PROTOCOL_VERSION

    def code(header: dict, payload=()) -> str:
        return _send(socket, {"v": version, "id": "r", **header}, payload).get("code")

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
    assert _send(socket, {"v": 99, "id": "r", "op": "ping"})["code"] == protocol.VERSION_MISMATCH
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
        {"v": 1, "id": "r", "op": "complete", **header}, list(payload), models or _Models(),
        identity=b"me", max_side=1000, timeout=30.0,
    )  # fmt: skip


def test_a_valid_complete_request_becomes_a_job_without_a_socket() -> None:
    job = _validate({"width": 4, "height": 4, "keepalive": 2, "model": "tiny", "blend": "none"})
    assert (job.request_id, job.identity, job.width, job.height) == ("r", b"me", 4, 4)
    assert (job.model, job.blend, job.timeout, job.keepalive) == ("tiny", "none", 30.0, 2.0)
    assert bytes(job.pixels) == _FRAMES_4X4[0] and bytes(job.mask) == _FRAMES_4X4[1]
    job = _validate({"width": 4, "height": 4})
    assert (job.model, job.blend, job.keepalive) == (None, "poisson", None)


def test_payload_frames_are_joined_wherever_they_were_cut() -> None:
    """Pixels then mask, cut in frames of any size (the client cuts at FRAME_LIMIT): joined
    back, and each frame let go once copied (the list ends up empty)."""
    data = bytes(range(80))
    payload = [data[:10], memoryview(data)[10:70], zmq.Frame(data[70:]).buffer]
    job = validate_complete(
        {"v": 1, "id": "r", "width": 4, "height": 4}, payload, _Models(), max_side=8, timeout=1
    )
    assert bytes(job.pixels) == data[:64] and bytes(job.mask) == data[64:] and payload == []
    frames = protocol.pack({"id": "x"}, [bytes(2 * protocol.FRAME_LIMIT + 5), b"\1" * 3])
    assert [len(frame) for frame in frames[1:]] == [protocol.FRAME_LIMIT] * 2 + [5, 3]


@pytest.mark.parametrize(
    ("header", "payload", "models", "code", "words"),
    [
        ({"width": "4", "height": 4}, _FRAMES_4X4, None, protocol.BAD_REQUEST, "integers"),
        ({"width": True, "height": 4}, _FRAMES_4X4, None, protocol.BAD_REQUEST, "integers"),
        ({"width": 0, "height": 4}, [b"", b""], None, protocol.BAD_REQUEST, "empty"),
        ({"width": 1001, "height": 4}, _FRAMES_4X4, None, protocol.TOO_LARGE, "1000x1000"),
        ({"width": 4, "height": 4}, _FRAMES_4X4[:1], None, protocol.BAD_REQUEST, "got 64"),
        ({"width": 4, "height": 4}, [b"\0" * 63, b"\0" * 16], None, protocol.BAD_REQUEST,
         "64 \\+ 16 bytes of payload, got 79"),
        ({"width": 4, "height": 4}, [b"\0" * 64, b"\0" * 17], None, protocol.BAD_REQUEST,
         "got 81"),
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
    version = protocol.PROTOCOL_VERSION
    frames = protocol.pack({"v": version, "id": "a", "op": "ping"}, [b"x"])
    for given_frames in (frames, [zmq.Frame(frame) for frame in frames]):  # bytes or zero-copy
        header, payload = read_message(given_frames)
        assert header["op"] == "ping" and [bytes(frame) for frame in payload] == [b"x"]

    def refusal(frames: list) -> tuple[str, object]:
        with pytest.raises(RequestError) as refused:
            read_message(frames)
        return refused.value.code, refused.value.request_id

    assert refusal([]) == (protocol.BAD_REQUEST, None)
    oversized = msgpack.packb({"v": version, "id": "big", "op": "ping", "pad": "x" * 70000})
    assert refusal([oversized]) == (protocol.BAD_REQUEST, None)
    assert refusal([b"\x93"]) == (protocol.BAD_REQUEST, None)
    assert refusal(protocol.pack({"v": 1, "id": "c"})) == (protocol.VERSION_MISMATCH, "c")
    assert refusal(protocol.pack({"v": version, "id": 7})) == (protocol.BAD_REQUEST, 7)
    assert refusal(protocol.pack({"v": version})) == (protocol.BAD_REQUEST, None)
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
        "v": st.one_of(st.just(protocol.PROTOCOL_VERSION), _scalars),
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
    st.lists(st.binary(max_size=64), min_size=1, max_size=5),  # raw frames, rarely msgpack
    st.tuples(_headers, st.lists(st.binary(max_size=160), max_size=3)),  # valid msgpack
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
                frames = protocol.pack(header, payload)
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
    save_slow_model(home)
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
            socket.send_multipart(
                protocol.pack({"v": protocol.PROTOCOL_VERSION, **header}, payload)
            )

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


def test_requests_of_a_client_that_stopped_sending_alive_are_dropped(tmp_path: Path) -> None:
    """A host that kills its plug-in (GIMP on Cancel) leaves requests nobody will read: the
    daemon drops them, running and queued, once their `alive` messages stop."""
    home = tmp_path / "home"
    save_slow_model(home)
    running = Daemon(home, "--model", "slow")
    running.start()
    try:
        connection = read_connection_file(running.connection_file)
        socket = _raw_socket(connection)
        pixels, mask = many_holes_job()

        def send(header: dict, payload=()) -> None:
            socket.send_multipart(
                protocol.pack({"v": protocol.PROTOCOL_VERSION, **header}, payload)
            )

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


def _timed_cli(home: Path, *args: str) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = daemon_cli(home, *args)
    return time.monotonic() - started, result


def test_sigkill_then_start_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    save_tiny(home, "tiny")
    running = Daemon(home)
    running.start()
    old_pid = running.pid()
    os.kill(old_pid, signal.SIGKILL)
    time.sleep(0.5)
    assert running.connection_file.exists()  # stale, left behind
    # The stale file points at a dead daemon: said at once, without waiting on a socket
    # (the lock beside it is free), not after the client's timeout.
    started = time.monotonic()
    with pytest.raises(DaemonNotRunning, match=f"daemon stopped \\(pid {old_pid}\\)"):
        Client(running.connection_file, timeout=30.0).ping()
    assert time.monotonic() - started < 5.0  # the timeout (30 s) twice, before
    # So status and stop cost what starting Python costs (before: 10 s more, the CLI's 5 s
    # ping timeout twice), and start takes over at once.
    bare, _ = _timed_cli(home, "--help")
    seconds, status = _timed_cli(home, "status")
    assert status.returncode == 2 and "not running" in status.stderr
    assert seconds < bare + 5.0
    seconds, stop = _timed_cli(home, "stop")
    assert stop.returncode == 0 and "not running" in stop.stdout
    assert seconds < bare + 5.0
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


# -- a daemon that is busy, or whose disk is full (issue 17, items 3, 6-9) ---------------------

#: A sitecustomize hook for the daemon process only (test code, not the daemon's): model files
#: named delayed*.safetensors take GLCIC_TEST_LOAD_DELAY seconds longer to load, and a marker
#: named after the model appears in GLCIC_TEST_LOADING when their loading starts.
_DELAYED_LOADING_HOOK = """
import os, sys, time
from pathlib import Path

if "--foreground" in sys.argv:
    from glcic.daemon import model_manager

    _load = model_manager.load_model

    def _delayed_load(path, *args, **kwargs):
        if Path(path).stem.startswith("delayed"):
            (Path(os.environ["GLCIC_TEST_LOADING"]) / Path(path).stem).touch()
            time.sleep(float(os.environ["GLCIC_TEST_LOAD_DELAY"]))
        return _load(path, *args, **kwargs)

    model_manager.load_model = _delayed_load
"""

#: The same for a full disk: in the daemon process, every write to stderr fails with ENOSPC
#: (/dev/full), and so does writing the lock file.
_FULL_DISK_HOOK = """
import errno, os, sys

if "--foreground" in sys.argv:
    os.dup2(os.open("/dev/full", os.O_WRONLY), 2)
    from glcic.daemon import connection

    def _open(path, *args, **kwargs):
        handle = open(path, *args, **kwargs)

        def flush():
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        handle.flush = flush
        return handle

    connection.open = _open
"""


def _hook_daemons(tmp_path: Path, monkeypatch, hook: str, **variables: str) -> None:
    """Daemons started by this test run `hook` at start-up (through PYTHONPATH)."""
    folder = tmp_path / "hook"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(hook)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(folder),
                       os.environ.get("PYTHONPATH")])))  # fmt: skip
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def _delayed_loading(tmp_path: Path, monkeypatch, seconds: float) -> Path:
    markers = tmp_path / "loading"
    markers.mkdir()
    _hook_daemons(tmp_path, monkeypatch, _DELAYED_LOADING_HOOK,
                  GLCIC_TEST_LOAD_DELAY=str(seconds), GLCIC_TEST_LOADING=str(markers))  # fmt: skip
    return markers


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _answers_at_once(client: Client) -> None:
    for call in (client.status, client.ping):
        started = time.monotonic()
        call()
        waited = time.monotonic() - started
        assert waited < 2.0, f"{call.__name__} took {waited:.1f} s while a model loaded"


def test_loading_a_model_never_holds_up_ping_and_status(tmp_path: Path, monkeypatch) -> None:
    """Item 6: a file dropped in, `reload`, and a model's first use all load off the main
    thread; the loaded models keep serving meanwhile."""
    markers = _delayed_loading(tmp_path, monkeypatch, seconds=6.0)
    home = tmp_path / "home"
    save_tiny(home, "tiny")
    running = Daemon(home, "--model", "tiny", "--device", "cpu")
    running.start()
    try:
        client = running.client()
        # A file dropped into the folder: the idle worker notices and loads it.
        save_tiny(home, "delayed1", seed=1)
        _wait_until(lambda: (markers / "delayed1").exists())
        _answers_at_once(client)
        rgba, mask = _job(4)
        assert np.array_equal(_remote(client, rgba, mask), complete(rgba, mask, make_tiny_model(0)))
        _wait_until(lambda: "delayed1" in client.status()["loaded_models"])
        # `reload`: answered once the new file has loaded, without holding up anyone else.
        save_tiny(home, "delayed2", seed=2)
        reloaded: dict = {}
        reloading = threading.Thread(target=lambda: reloaded.update(running.client().reload()))
        reloading.start()
        _wait_until(lambda: (markers / "delayed2").exists())
        _answers_at_once(client)
        reloading.join(timeout=60)
        assert {m["name"]: m["loaded"] for m in reloaded["models"]}["delayed2"]
        # The first use of a model that just appeared.
        save_tiny(home, "delayed3", seed=3)
        used: dict = {}

        def use() -> None:
            used["pixels"] = _remote(running.client(timeout=60), rgba, mask, model="delayed3")

        using = threading.Thread(target=use)
        using.start()
        _wait_until(lambda: (markers / "delayed3").exists())
        _answers_at_once(client)
        using.join(timeout=60)
        assert np.array_equal(used["pixels"], complete(rgba, mask, make_tiny_model(3)))
    finally:
        running.stop()


def test_a_slow_reload_never_cancels_a_live_clients_job(tmp_path: Path, monkeypatch) -> None:
    """Item 7: while `reload` loads a big file, a client sending `alive` keeps its job."""
    _delayed_loading(tmp_path, monkeypatch, seconds=6.0)
    home = tmp_path / "home"
    save_slow_model(home, "work")
    running = Daemon(home, "--model", "work", "--device", "cpu")
    running.start()
    try:
        pixels, mask = many_holes_job()  # tens of seconds with this model
        outcome: dict = {}

        def job() -> None:
            try:
                outcome["result"] = running.client(timeout=300).complete(
                    3000, 3000, pixels, mask, keepalive=0.2, timeout=300
                )
            except ClientError as error:
                outcome["error"] = error

        sent = time.monotonic()
        working = threading.Thread(target=job)
        working.start()
        client = running.client()
        _wait_until(lambda: client.status()["running"] is not None)
        save_tiny(home, "delayed", seed=1)
        reload_started = time.monotonic()
        reply = running.client(timeout=120).reload()
        reload_seconds = time.monotonic() - reload_started
        working.join(timeout=300)
        assert "error" not in outcome, outcome.get("error")
        assert reload_seconds > 5.0  # the reload did wait for the slow file
        assert {m["name"]: m["loaded"] for m in reply["models"]}["delayed"]
        # The job was still computing well after the reload began: it had `alive` to miss.
        assert sent + outcome["result"].seconds > reload_started + 1.0
        assert "its client is gone" not in running.log()
    finally:
        running.stop()


def test_alive_messages_are_judged_by_when_the_daemon_could_read_them(
    tmp_path: Path, monkeypatch
) -> None:
    """Item 7: time the main loop could not read messages never counts against a client."""
    from glcic.daemon.server import Server, ServerSettings

    monkeypatch.setenv("GLCIC_HOME", str(tmp_path))
    server = Server(ServerSettings(device="cpu"))
    try:
        job = _validate({"width": 4, "height": 4, "keepalive": 0.1})
        server.messages_read_at = job.last_seen  # everything read up to the request
        time.sleep(0.5)  # five `alive` periods in which the loop was busy elsewhere
        assert not server.client_gone(job)
        server.messages_read_at = time.monotonic()  # read again, and no `alive` had come
        assert server.client_gone(job)
    finally:
        server.context.term()


@pytest.mark.skipif(os.name != "posix", reason="modes are POSIX")
def test_logs_are_private_even_when_they_were_not(tmp_path: Path) -> None:
    """Item 3: the log folder is 700 and its files 600, also when they existed wider."""
    home = tmp_path / "home"
    logs = home / "logs"
    logs.mkdir(parents=True)
    logs.chmod(0o755)
    for name in ("daemon.log", "daemon.log.1", "daemon.stderr"):
        (logs / name).write_text("from before\n")
        (logs / name).chmod(0o644)
    save_tiny(home, "tiny")
    running = Daemon(home, "--model", "tiny", "--device", "cpu")
    running.start()
    try:
        assert stat.S_IMODE(logs.stat().st_mode) == 0o700
        for path in logs.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    finally:
        running.stop()


@pytest.mark.skipif(os.name != "posix", reason="modes are POSIX")
def test_rotated_logs_stay_private(tmp_path: Path) -> None:
    from glcic.daemon.files import PrivateLogFile

    handler = PrivateLogFile(tmp_path / "daemon.log", maxBytes=300, backupCount=2)
    for index in range(40):
        handler.emit(logging.makeLogRecord({"msg": f"line {index} " + "x" * 40}))
    handler.close()
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "daemon.log", "daemon.log.1", "daemon.log.2",
    ]  # fmt: skip
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def _full_disk_open(path, *args, **kwargs):
    """open(), but nothing written reaches the disk: it is full (ENOSPC when flushed)."""
    handle = open(path, *args, **kwargs)  # noqa: SIM115 - the caller closes it

    def flush() -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    handle.flush = flush
    return handle


def test_start_in_the_foreground_on_a_full_disk_says_so_in_one_line(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """Item 8: one line naming the full disk and the file, exit status 2, no traceback."""
    from glcic.daemon import cli, connection

    monkeypatch.setenv("GLCIC_HOME", str(tmp_path))
    monkeypatch.setattr(connection, "open", _full_disk_open, raising=False)
    logger = logging.getLogger("glcic.daemon")
    before = list(logger.handlers), logger.level, logger.propagate
    try:
        status = cli.main(["start", "--foreground", "--device", "cpu"])
    finally:
        for handler in [h for h in logger.handlers if h not in before[0]]:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(before[1])
        logger.propagate = before[2]
    error = capsys.readouterr().err
    assert status == 2
    assert error.count("\n") == 1 and "Traceback" not in error, error
    assert "the disk is full" in error and str(tmp_path / "run" / "daemon.lock") in error


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_start_on_a_full_disk_reports_the_daemons_reason(tmp_path: Path, monkeypatch) -> None:
    """Item 8: the detached daemon cannot write its logs, yet `start` says why it stopped."""
    _hook_daemons(tmp_path, monkeypatch, _FULL_DISK_HOOK)
    home = tmp_path / "home"
    save_tiny(home, "tiny")
    result = daemon_cli(home, "start", "--device", "cpu", "--model", "tiny")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "the daemon did not start: the disk is full" in result.stderr
    assert str(home / "run" / "daemon.lock") in result.stderr


def test_daemon_stderr_keeps_only_what_escapes_logging(daemon: Daemon) -> None:
    """Item 9: log lines go to daemon.log (rotated), not into daemon.stderr too."""
    client = daemon.client()
    for seed in range(20):
        _remote(client, *_job(seed))
    logs = daemon.home / "logs"
    assert (logs / "daemon.log").read_text().count("completed") >= 20
    stderr = (logs / "daemon.stderr").read_bytes()
    assert b"completed" not in stderr and len(stderr) < 4096, stderr[-1000:]


def test_stderr_escaping_logging_is_trimmed_to_its_end(tmp_path: Path) -> None:
    """What escapes logging (a C library repeating a warning) cannot grow daemon.stderr without
    bound: over the limit, only its end is kept, and later writes still land after it."""
    from glcic.daemon.files import open_private, trim_to_tail

    path = tmp_path / "daemon.stderr"
    handle = open_private(path)
    fd = handle.fileno()
    try:
        os.write(fd, b"early\n" * 10)
        assert not trim_to_tail(fd, limit=1000, keep=100)
        lines = b"".join(b"line %06d\n" % i for i in range(2000))
        os.write(fd, lines)
        assert trim_to_tail(fd, limit=1000, keep=110)
        os.write(fd, b"after\n")
    finally:
        handle.close()
    text = path.read_bytes()
    assert text == b"[earlier output trimmed]\n" + lines[-110:] + b"after\n"


def test_cli_complete_refuses_an_output_folder_that_does_not_exist(
    daemon: Daemon, tmp_path: Path
) -> None:
    """Like a missing input: one line and exit status 2, and no folders made."""
    rgba, mask = _job(8)
    Image.fromarray(rgba[..., :3]).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "missing" / "deeper" / "out.png"
    result = daemon_cli(
        daemon.home, "complete", str(tmp_path / "in.png"), str(tmp_path / "mask.png"), str(out)
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "missing").exists()


# --- start's options, checked before it serves (issue 19, items 7 and 8) -------------------------


def test_start_refuses_an_unknown_model_and_a_bad_device_in_one_line(tmp_path: Path) -> None:
    save_tiny(tmp_path, "tiny")
    for options, message in (
        (["--model", "nosuch"], "--model nosuch: no such model; available: default (built-in), "
         f"tiny (model folder: {tmp_path / 'models'})"),
        (["--device", "bogus"], "--device bogus: not a device; use auto, cpu, cuda, cuda:N or mps"),
        (["--model", str(tmp_path)], "is a folder, not a model file"),
    ):  # fmt: skip
        result = daemon_cli(tmp_path, "start", *options)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
        assert not (tmp_path / "run" / "daemon.json").exists()
    refused = daemon_cli(tmp_path, "start", "--threads", "0")
    assert refused.returncode == 2 and "between 1 and 256" in refused.stderr


def test_a_detached_start_whose_model_cannot_load_says_why(tmp_path: Path) -> None:
    """The name exists, so `start` spawns the daemon; the daemon finds the file broken and
    stops before serving, and `start` reports its reason with status 2."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "broken.safetensors").write_bytes(b"not a model")
    result = daemon_cli(tmp_path, "start", "--device", "cpu", "--model", "broken.safetensors")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert "the daemon did not start: --model broken: cannot be loaded: " in result.stderr
    assert not (tmp_path / "run" / "daemon.json").exists()


def test_threads_are_a_setting_shown_in_status(tmp_path: Path) -> None:
    save_tiny(tmp_path, "tiny")
    running = Daemon(tmp_path, "--model", "tiny", "--device", "cpu", "--threads", "2")
    running.start()
    try:
        assert running.client().status()["threads"] == 2
        assert ", 2 CPU threads, default model tiny" in daemon_cli(tmp_path, "status").stdout
    finally:
        running.stop()


def test_status_into_a_reader_that_stopped_gives_no_traceback(daemon: Daemon) -> None:
    """`glcic-daemon status | head`, with the reader gone before anything is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "glcic.daemon.cli", "status"],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
            env={**os.environ, "GLCIC_HOME": str(daemon.home)},
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.stderr == "" and result.returncode == 141


def test_cli_complete_names_a_model_by_name_file_name_or_path(daemon: Daemon, tmp_path) -> None:
    rgba, mask = _job(8, size=(40, 56))
    Image.fromarray(rgba[..., :3]).save(tmp_path / "in.png")
    Image.fromarray(mask).save(tmp_path / "mask.png")
    files = [str(tmp_path / "in.png"), str(tmp_path / "mask.png"), str(tmp_path / "out.png")]
    local = complete(rgba[..., :3].copy(), mask, make_tiny_model(0))
    in_folder = daemon.home / "models" / "tiny.safetensors"
    for spec in ("tiny.safetensors", str(in_folder)):
        result = daemon_cli(daemon.home, "complete", *files, "--model", spec)
        assert result.returncode == 0, result.stderr
        assert np.array_equal(np.asarray(Image.open(tmp_path / "out.png")), local)
    outside = save_tiny(tmp_path, "outside")
    result = daemon_cli(daemon.home, "complete", *files, "--model", str(outside))
    assert result.returncode == 2 and "serves only the models in its folder" in result.stderr
