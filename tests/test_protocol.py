"""The thin client (daemon/protocol.py) as plugins use it: connection files of this and other
protocol versions, a pyzmq without CURVE, and noticing a daemon that is gone."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import zmq
from support.daemon import Daemon, many_holes_job, save_slow_model

from glcic.daemon import protocol
from glcic.daemon.connection import write_connection_file
from glcic.daemon.protocol import Client, CurveUnavailable, DaemonNotRunning, ProtocolMismatch
from glcic.daemon.security import Keys
from glcic.errors import GlcicError

SUPPORT = Path(__file__).parent / "support"
ROOT = Path(__file__).resolve().parents[1]


def _module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def _connection_file(folder: Path, pid: int = 12345, **fields) -> Path:
    """A connection file as the daemon writes it, with no daemon behind it (port 9: discard)."""
    document = {"protocol": protocol.PROTOCOL_VERSION, "host": "127.0.0.1", "port": 9,
                "pid": pid, **Keys.generate().connection_fields(), **fields}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "daemon.json"
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return path


def test_a_protocol_1_client_refuses_the_new_connection_file_at_once(tmp_path, monkeypatch):
    """Plugins installed before protocol 2 carry the old client: it reads the file's version
    before connecting, so it says the versions differ, at once (it could not handshake)."""
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path))
    path = write_connection_file("127.0.0.1", 9, Keys.generate().connection_fields())
    old = _module("glcic_client_v1", SUPPORT / "protocol_v1_client.py")
    assert old.PROTOCOL_VERSION == 1
    started = time.monotonic()
    with pytest.raises(old.ProtocolMismatch, match="speaks protocol 2, this client 1"):
        old.Client(path, timeout=30.0)
    assert time.monotonic() - started < 5.0  # no wait on a socket at all
    # And the other way round: this client meets a file of a protocol-1 daemon.
    document = {"protocol": 1, "host": "127.0.0.1", "port": 9, "pid": 1, "key": "00" * 32}
    path.write_text(json.dumps(document))
    started = time.monotonic()
    with pytest.raises(ProtocolMismatch, match="speaks protocol 1, this client 2"):
        Client(path, timeout=30.0)
    assert time.monotonic() - started < 5.0


def test_a_pyzmq_without_curve_is_refused_with_the_fix_named(tmp_path, monkeypatch):
    path = _connection_file(tmp_path)  # no lock beside it: a daemon that cannot be checked
    monkeypatch.setattr(zmq, "has", lambda capability: capability != "curve")
    with pytest.raises(CurveUnavailable) as refused:
        Client(path)
    message = str(refused.value)
    assert "CURVE" in message and "pip install --upgrade pyzmq" in message
    assert "python3-zmq" in message and zmq.zmq_version() in message
    with pytest.raises(GlcicError, match="no CURVE encryption"):  # the daemon refuses to start
        Keys.generate()
    sys.modules.setdefault("glcic_client", protocol)
    common = _module("plugin_common", ROOT / "plugins" / "shared" / "glcic_plugin_common.py")
    words = common.describe_client_error(refused.value, "krita")
    assert "glcic-daemon install-plugin krita --python X.Y" in words and message in words


def test_the_daemon_lock_says_whether_the_daemon_of_a_file_runs(tmp_path) -> None:
    path = _connection_file(tmp_path / "run", pid=12345)
    connection = protocol.read_connection_file(path)
    assert connection.daemon_alive()  # a copied file, no lock beside it: cannot tell
    lock = tmp_path / "run" / protocol.LOCK_FILE_NAME
    lock.write_text("12345")
    assert not connection.daemon_alive()  # a lock nobody holds: its daemon was killed
    with open(lock, "a+") as held:  # what a running daemon does (connection.DaemonLock)
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert connection.daemon_alive()
        lock.write_text("999")
        assert not connection.daemon_alive()  # held by a daemon started since: ours is gone
    path.unlink()
    lock.unlink()
    assert not connection.daemon_alive()  # a clean exit removes both files


def test_a_client_reports_a_daemon_killed_mid_request_within_seconds(tmp_path) -> None:
    """Before, a client waited out its whole timeout (600 s for `glcic-daemon complete`) for a
    daemon that had died, then blamed it for being busy or stuck."""
    timeout = 120.0
    home = tmp_path / "home"
    save_slow_model(home)
    running = Daemon(home, "--model", "slow", "--device", "cpu")
    running.start()
    try:
        pid = running.pid()
        pixels, mask = many_holes_job()
        working, outcome = threading.Event(), {}

        def wait() -> None:
            try:
                with running.client(timeout=10) as client:
                    client.complete(
                        3000, 3000, pixels, mask, timeout=timeout,
                        progress=lambda stage, _: stage == "network" and working.set(),
                    )  # fmt: skip
            except Exception as error:
                outcome["error"] = error
            outcome["at"] = time.monotonic()

        waiter = threading.Thread(target=wait, daemon=True)
        waiter.start()
        assert working.wait(120), "the slow request never reached the network"
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        waiter.join(timeout / 2)
        assert not waiter.is_alive(), "the client is still waiting for a dead daemon"
        error = outcome.get("error")
        assert isinstance(error, DaemonNotRunning), error
        assert f"the glcic daemon stopped (pid {pid})" in str(error)
        assert outcome["at"] - killed < timeout / 8  # within about LIVENESS_SECONDS, here
        # The connection file it left behind costs a new client no wait either.
        started = time.monotonic()
        with pytest.raises(DaemonNotRunning, match="stopped"):
            running.client(timeout=timeout).ping()
        assert time.monotonic() - started < timeout / 8
    finally:
        running.stop()
