"""Per-user folders: GLCIC_HOME, and the client finding the daemon where the daemon writes."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from glcic import paths
from glcic.daemon import connection, protocol


def test_glcic_home_replaces_every_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path))
    assert paths.models_dir() == tmp_path / "models"
    assert protocol.default_runtime_dir() == tmp_path / "run"
    assert paths.log_dir() == tmp_path / "logs"
    assert protocol.default_connection_file() == tmp_path / "run" / "daemon.json"
    assert connection.connection_file_path() == protocol.default_connection_file()


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="the XDG rule")
def test_runtime_dir_is_a_private_xdg_folder_or_a_private_fallback(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("GLCIC_HOME", raising=False)
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert protocol.default_runtime_dir() == runtime / "glcic"
    assert connection.connection_file_path().parent == runtime / "glcic"  # where clients look
    runtime.chmod(0o755)  # others could enter it: not a runtime dir to keep a key in
    assert protocol.default_runtime_dir() != runtime / "glcic"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again
    try:
        expected = (
            Path(f"/run/user/{os.getuid()}/glcic")
            if protocol._is_private_dir(f"/run/user/{os.getuid()}", os.getuid())
            else tmp_path / f"runtime-{os.getuid()}" / "glcic"
        )
        assert protocol.default_runtime_dir() == expected
    finally:
        tempfile.tempdir = None


def test_connection_file_override(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_CONNECTION_FILE", str(tmp_path / "elsewhere.json"))
    assert protocol.default_connection_file() == tmp_path / "elsewhere.json"


@pytest.mark.skipif(os.name != "posix", reason="ownership and modes are POSIX")
def test_daemon_refuses_a_runtime_folder_someone_else_controls(tmp_path, monkeypatch) -> None:
    from glcic.errors import GlcicError

    mine = tmp_path / "run"
    connection._private_dir(mine)  # created for this user only
    assert mine.stat().st_mode & 0o777 == 0o700
    monkeypatch.setattr(os, "getuid", lambda: mine.stat().st_uid + 1)  # as if planted by another
    with pytest.raises(GlcicError, match="belongs to another user"):
        connection._private_dir(mine)
