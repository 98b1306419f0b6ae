"""What the plugins share, tested in plain Python: the context rule, pixel bytes, the daemon
call on a worker thread (against a real daemon), and installing into a host's folders."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.daemon import tiny_daemon
from support.models import make_tiny_model

from glcic import complete
from glcic.crops import Box, find_hole_groups, plan_crop
from glcic.daemon import discovery, protocol
from glcic.daemon.install_krita import enable_in_kritarc
from glcic.networks import RECEPTIVE_FIELD_RADIUS
from glcic.pipeline import DEFAULT_MAX_WORKING_SIDE

ROOT = Path(__file__).resolve().parents[1]


def _load_common():
    """plugins/shared/glcic_plugin_common.py as a plugin imports it: beside `glcic_client`."""
    sys.modules.setdefault("glcic_client", protocol)
    path = ROOT / "plugins" / "shared" / "glcic_plugin_common.py"
    spec = importlib.util.spec_from_file_location("glcic_plugin_common", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


common = _load_common()


def test_client_constants_match_the_engine() -> None:
    assert protocol.RECEPTIVE_FIELD_RADIUS == RECEPTIVE_FIELD_RADIUS
    assert protocol.MAX_WORKING_SIDE == DEFAULT_MAX_WORKING_SIDE


@st.composite
def _selections(draw):
    height, width = draw(st.integers(8, 700)), draw(st.integers(8, 700))
    mask = np.zeros((height, width), np.uint8)
    for _ in range(draw(st.integers(1, 3))):
        h, w = draw(st.integers(1, height)), draw(st.integers(1, width))
        y, x = draw(st.integers(0, height - h)), draw(st.integers(0, width - w))
        mask[y : y + h, x : x + w] = 255
    return mask, draw(st.sampled_from([16, 48, 96, 128]))


def _pipeline_reads(mask: np.ndarray, max_hole_side: int) -> Box:
    """The smallest box holding every crop the pipeline plans for `mask`: what it reads."""
    groups = find_hole_groups(mask, merge_distance=RECEPTIVE_FIELD_RADIUS)
    crops = [
        plan_crop(
            group, mask.shape, max_hole_side, RECEPTIVE_FIELD_RADIUS, DEFAULT_MAX_WORKING_SIDE
        ).crop
        for group in groups
    ]
    region = crops[0]
    for crop in crops[1:]:
        region = region.union(crop)
    return region


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_selections())
def test_context_box_holds_every_pixel_the_pipeline_reads(case) -> None:
    mask, max_hole = case
    ys, xs = np.nonzero(mask)
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    x0, y0, x1, y1 = protocol.context_box(box, (mask.shape[1], mask.shape[0]), max_hole)
    needed = _pipeline_reads(mask, max_hole)
    assert 0 <= x0 <= needed.x0 and 0 <= y0 <= needed.y0
    assert needed.x1 <= x1 <= mask.shape[1] and needed.y1 <= y1 <= mask.shape[0]


@pytest.mark.parametrize(
    ("size", "hole"),
    [
        ((300, 420), (140, 200, 60, 50)),
        ((300, 420), (0, 5, 90, 40)),
        ((1000, 1400), (400, 600, 100, 80)),
        ((700, 900), (100, 300, 500, 400)),
    ],
)
def test_completing_only_the_context_box_gives_the_same_pixels(size, hole) -> None:
    rng = np.random.default_rng(0)
    height, width = size
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    mask = np.zeros((height, width), np.uint8)
    y, x, h, w = hole
    mask[y : y + h, x : x + w] = 255
    model = make_tiny_model()
    limit = model.metadata.hole_size_range[1]
    x0, y0, x1, y1 = protocol.context_box((x, y, x + w, y + h), (width, height), limit)
    if height >= 1000:  # a small hole in a large image: far fewer pixels to read and send
        assert (x1 - x0) * (y1 - y0) < width * height / 2
    whole = complete(image, mask, model)
    part = complete(image[y0:y1, x0:x1].copy(), mask[y0:y1, x0:x1].copy(), model)
    assert np.array_equal(part, whole[y0:y1, x0:x1])


def test_channel_swap_and_hole_mask() -> None:
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (7, 5, 4), dtype=np.uint8)
    swapped = np.frombuffer(common.swap_red_blue(pixels.tobytes()), np.uint8).reshape(7, 5, 4)
    assert np.array_equal(swapped, pixels[..., [2, 1, 0, 3]])
    selection = np.array([0, 1, 127, 254, 255], np.uint8)
    assert list(common.hole_mask(selection.tobytes())) == [0, 255, 255, 255, 255]


@pytest.mark.parametrize("order", ["rgba", "bgra"])
def test_fill_layer_pixels_use_the_selection_as_alpha(order) -> None:
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (6, 9, 4), dtype=np.uint8)
    alpha = rng.integers(0, 256, (6, 9), dtype=np.uint8)
    alpha[0] = 0
    out = np.frombuffer(common.fill_layer_pixels(rgba.tobytes(), alpha.tobytes(), order), np.uint8)
    out = out.reshape(6, 9, 4)
    colour = rgba[..., [2, 1, 0]] if order == "bgra" else rgba[..., :3]
    expected = np.where(alpha[..., None] > 0, colour, 0)
    assert np.array_equal(out[..., :3], expected)
    assert np.array_equal(out[..., 3], alpha)
    with pytest.raises(ValueError):
        common.fill_layer_pixels(rgba.tobytes(), alpha.tobytes()[:-1])


def test_region_mask_and_sub_rows_place_the_selection() -> None:
    rect = common.Rect
    selection = np.arange(1, 13, dtype=np.uint8).reshape(3, 4)
    box, region = rect(5, 7, 4, 3), rect(2, 6, 10, 6)
    mask = np.frombuffer(common.region_mask(selection.tobytes(), box, region), np.uint8)
    expected = np.zeros((6, 10), np.uint8)
    expected[1:4, 3:7] = 255
    assert np.array_equal(mask.reshape(6, 10), expected)
    part = common.sub_rows(selection.tobytes(), 4, rect(1, 1, 2, 2))
    assert list(part) == [6, 7, 10, 11]
    assert rect(0, 0, 10, 10).intersected(rect(8, -2, 5, 5)) == rect(8, 0, 2, 3)
    assert rect(0, 0, 4, 4).intersected(rect(6, 6, 2, 2)).empty


# -- the daemon call on a worker thread -------------------------------------------------------


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    with tiny_daemon(tmp_path_factory.mktemp("plugin-home")) as running:
        yield running


def _events_until_end(job, on_need_pixels, timeout: float = 60.0) -> list[tuple]:
    """What the UI thread sees, polling like the plugins' timers do."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = job.events.get(timeout=0.05)
        except Exception:
            continue
        seen.append(event)
        if event[0] == "need_pixels":
            on_need_pixels(int(event[1]))
        if event[0] in ("result", "cancelled", "error"):
            return seen
    raise AssertionError(f"the job did not end: {seen}")


def test_job_asks_for_the_context_then_returns_the_fill(daemon, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_CONNECTION_FILE", str(daemon.connection_file))
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (120, 160, 4), dtype=np.uint8)
    box, bounds = common.Rect(60, 40, 30, 20), common.Rect(0, 0, 160, 120)
    selection = np.full((20, 30), 255, np.uint8).tobytes()
    job = common.CompletionJob("krita")

    def provide(limit: int) -> None:
        region = common.context_region(box, bounds, limit)
        rows = slice(region.y, region.y + region.height)
        columns = slice(region.x, region.x + region.width)
        rgba = np.ascontiguousarray(image[rows, columns]).tobytes()
        job.provide(common.Request(region, rgba, common.region_mask(selection, box, region)))

    job.start()
    events = _events_until_end(job, provide)
    kinds = [event[0] for event in events]
    assert kinds[0] == "need_pixels" and events[0][1] == 64  # the tiny model's largest hole
    assert "progress" in kinds and kinds[-1] == "result"
    request, result = events[-1][1], events[-1][2]
    mask = np.zeros((120, 160), np.uint8)
    mask[40:60, 60:90] = 255
    expected = complete(image, mask, make_tiny_model())
    x, y = request.region.x + result.x, request.region.y + result.y
    got = np.frombuffer(result.rgba, np.uint8).reshape(result.height, result.width, 4)
    assert np.array_equal(got, expected[y : y + result.height, x : x + result.width])


def test_job_cancelled_before_sending_ends_quietly(daemon, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_CONNECTION_FILE", str(daemon.connection_file))
    job = common.CompletionJob("gimp")
    job.start()
    events = _events_until_end(job, lambda limit: job.cancel())
    assert [event[0] for event in events] == ["need_pixels", "cancelled"]


def test_job_without_a_daemon_says_how_to_start_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_CONNECTION_FILE", str(tmp_path / "none.json"))
    job = common.CompletionJob("gimp")
    job.start()
    events = _events_until_end(job, lambda limit: None)
    assert events[-1][0] == "error"
    assert "not running" in events[-1][1] and "glcic-daemon start" in events[-1][1]
    assert events[-1][1].lower().count("not running") == 1  # said once, not echoed in brackets
    refused = protocol.DaemonNotRunning("cannot connect to the daemon at tcp://x (refused)")
    assert "(cannot connect" in common.describe_client_error(refused, "gimp")


def test_error_words_name_the_host_and_the_remedy() -> None:
    mismatch = common.describe_client_error(protocol.ProtocolMismatch("v2 vs v1"), "gimp")
    assert "install-plugin gimp" in mismatch
    busy = common.describe_daemon_error(protocol.DaemonError(protocol.BUSY, "busy"))
    assert "try again" in busy
    timeout = common.describe_client_error(protocol.DaemonTimeout("slow"), "krita")
    assert "glcic-daemon status" in timeout


# -- installing into Krita's folders ---------------------------------------------------------


def _install(home: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    env["HOME"] = str(home)
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "glcic.daemon.cli", "install-plugin", *args],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip


def test_enable_in_kritarc_keeps_everything_else() -> None:
    text = (
        "[General]\nfoo=1\n\n[python]\nenable_other=true\nenable_glcic_complete=false\n[Z]\nx=y\n"
    )
    edited = enable_in_kritarc(text, "glcic_complete")
    assert edited == text.replace("enable_glcic_complete=false", "enable_glcic_complete=true")
    assert enable_in_kritarc(edited, "glcic_complete") == edited
    assert enable_in_kritarc("", "p") == "[python]\nenable_p=true\n"
    assert enable_in_kritarc("[a]\nb=c\n", "p") == "[a]\nb=c\n\n[python]\nenable_p=true\n"
    inserted = enable_in_kritarc("[python]\nenable_x=true\n[b]\n", "p")
    assert inserted == "[python]\nenable_p=true\nenable_x=true\n[b]\n"


def test_install_krita_puts_every_piece_in_place(tmp_path) -> None:
    pykrita = tmp_path / "share" / "krita" / "pykrita"
    kritarc = tmp_path / ".config" / "kritarc"
    kritarc.parent.mkdir(parents=True)
    kritarc.write_text("[General]\nkeep=me\n")
    for _ in range(2):  # installing again replaces the previous install
        result = _install(tmp_path, "krita", "--dest", str(pykrita))
        assert result.returncode == 0, result.stderr
    package = pykrita / "glcic_complete"
    names = {p.name for p in package.iterdir()}
    assert {"__init__.py", "extension.py", "document_io.py", "glcic_client.py",
            "glcic_plugin_common.py", "Manual.html"} <= names  # fmt: skip
    assert "glcic_complete.action" not in names and "__pycache__" not in names
    assert (pykrita / "glcic_complete.desktop").is_file()
    assert (pykrita.parent / "actions" / "glcic_complete.action").is_file()
    assert (package / "glcic_client.py").read_bytes() == Path(protocol.__file__).read_bytes()
    assert (package / "glcic_discovery.py").read_bytes() == Path(discovery.__file__).read_bytes()
    assert kritarc.read_text() == "[General]\nkeep=me\n\n[python]\nenable_glcic_complete=true\n"
    leftovers = [p.name for p in pykrita.iterdir() if p.name.startswith(".")]
    assert leftovers == []


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="Linux distribution Krita")
def test_install_krita_warns_of_a_venv_first_on_path(tmp_path) -> None:
    """Debian's Krita takes its Python home from the first python3 on PATH: an activated venv
    without system site packages hides PyQt5 and Krita loads no Python plugin."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python3").symlink_to(sys.executable)
    path = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    pykrita = str(tmp_path / "pykrita")
    for config, warned in (
        ("home = /usr/bin\ninclude-system-site-packages = false\n", True),
        ("home = /usr/bin\n", True),
        ("home = /usr/bin\ninclude-system-site-packages = true\n", False),
    ):
        (venv / "pyvenv.cfg").write_text(config)
        result = _install(tmp_path, "krita", "--dest", pykrita, PATH=path)
        assert result.returncode == 0, result.stderr
        warning = f"the virtual environment {venv} comes first on PATH"
        assert (warning in result.stderr) is warned, (config, result.stderr)
        assert ("'deactivate'" in result.stderr) is warned
    (venv / "pyvenv.cfg").unlink()  # a plain folder holding a python3 is not a venv
    result = _install(tmp_path, "krita", "--dest", pykrita, PATH=path)
    assert "virtual environment" not in result.stderr


def test_install_into_an_unwritable_place_fails_cleanly(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _install(tmp_path, "krita", "--dest", str(blocker / "pykrita"))
    assert result.returncode == 2
    assert "could not install the krita plugin" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("host", ["krita", "gimp"])
def test_a_reinstall_that_cannot_fetch_wheels_keeps_the_working_install(tmp_path, host) -> None:
    dest = tmp_path / "plugins"
    assert _install(tmp_path, host, "--dest", str(dest)).returncode == 0
    vendored = dest / "glcic_complete" / "vendor" / "zmq" / "__init__.py"  # an earlier --python
    vendored.parent.mkdir(parents=True)
    vendored.write_text("# the pyzmq an earlier install unpacked\n")
    before = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    offline = _install(tmp_path, host, "--dest", str(dest), "--python", version, PIP_NO_INDEX="1")
    assert offline.returncode == 2 and "Traceback" not in offline.stderr
    after = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert after == before  # nothing half-replaced, no staging folder left behind


def test_install_refuses_a_malformed_python_version(tmp_path) -> None:
    result = _install(tmp_path, "krita", "--dest", str(tmp_path / "p"), "--python", "three")
    assert result.returncode == 2 and "3.10" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_install_for_a_bundled_python_vendors_an_importable_pyzmq(tmp_path) -> None:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    pykrita = tmp_path / "pykrita"
    result = _install(tmp_path, "krita", "--dest", str(pykrita), "--python", version)
    assert result.returncode == 0, result.stderr
    vendor = pykrita / "glcic_complete" / "vendor"
    check = subprocess.run(
        [sys.executable, "-I", "-S", "-c",
         f"import sys; sys.path.insert(0, {str(vendor)!r}); import zmq, msgpack; "
         "print(zmq.__file__, msgpack.__file__)"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert str(vendor) in check.stdout
    assert stat.S_ISDIR((vendor / "zmq").stat().st_mode)


class _ScriptedDaemon:
    """A ROUTER socket that answers like a daemon only as a test scripts it (or not at all)."""

    def __init__(self, tmp_path: Path) -> None:
        import zmq
        from zmq.utils import z85

        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.curve_server = True  # no ZAP handler: any client with the server key
        self.socket.curve_secretkey = server_secret
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.connection_file = tmp_path / "daemon.json"
        document = {"host": "127.0.0.1", "port": port, "pid": os.getpid(),
                    "protocol": protocol.PROTOCOL_VERSION,
                    "server_key": z85.decode(server_public).hex(),
                    "client_key": z85.decode(client_public).hex(),
                    "key": z85.decode(client_secret).hex()}  # fmt: skip
        self.connection_file.write_text(json.dumps(document))
        self.connection_file.chmod(0o600)

    def receive(self, op: str, timeout: float = 30.0) -> tuple[bytes, dict]:
        """The next message with `op` (keepalives and others are read and skipped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.socket.poll(100):
                identity, *frames = self.socket.recv_multipart()
                header, _ = protocol.unpack(frames)
                if header.get("op") == op:
                    return identity, header
        raise AssertionError(f"no {op!r} message arrived")

    def reply(self, identity: bytes, header: dict, payload=()) -> None:
        self.socket.send_multipart([identity, *protocol.pack(header, payload)])

    def close(self) -> None:
        self.socket.close()
        self.context.term()


def _complete_in_thread(connection_file: Path, cancel):
    import threading

    outcome: dict = {}

    def run() -> None:
        with protocol.Client(connection_file, timeout=5) as client:
            try:
                outcome["result"] = client.complete(4, 4, bytes(64), bytes(16), cancel=cancel,
                                                    timeout=120)  # fmt: skip
            except protocol.DaemonError as error:
                outcome["code"] = error.code
            except protocol.DaemonTimeout:
                outcome["code"] = "timeout"

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_cancel_ends_the_wait_even_when_the_daemon_never_confirms(tmp_path, monkeypatch) -> None:
    """A daemon that died or hangs mid-job must not hold the user's Cancel for the full timeout."""
    import threading

    monkeypatch.setattr(protocol, "CANCEL_GRACE_SECONDS", 0.5)
    daemon = _ScriptedDaemon(tmp_path)
    try:
        cancel = threading.Event()
        thread, outcome = _complete_in_thread(daemon.connection_file, cancel)
        daemon.receive("complete")
        cancel.set()
        daemon.receive("cancel")  # and never answered
        thread.join(60)  # far below the request's 120 s timeout
        assert not thread.is_alive() and outcome == {"code": protocol.CANCELLED}
    finally:
        daemon.close()


def test_a_result_that_crosses_the_cancel_is_discarded(tmp_path) -> None:
    """Cancel acts between crops, so a result may still come: the user asked for nothing more."""
    import threading

    daemon = _ScriptedDaemon(tmp_path)
    try:
        cancel = threading.Event()
        thread, outcome = _complete_in_thread(daemon.connection_file, cancel)
        identity, request = daemon.receive("complete")
        cancel.set()
        daemon.receive("cancel")
        result = {"v": 1, "id": request["id"], "type": "result", "x": 0, "y": 0, "width": 4,
                  "height": 4, "model": "m", "seconds": 0.1}  # fmt: skip
        daemon.reply(identity, result, [bytes(64)])
        thread.join(60)
        assert not thread.is_alive() and outcome == {"code": protocol.CANCELLED}
    finally:
        daemon.close()
