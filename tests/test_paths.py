"""Per-user folders: GLCIC_HOME, and the client finding the daemon where the daemon writes."""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from glcic import paths
from glcic.daemon import connection, discovery, protocol
from glcic.daemon.security import Keys
from glcic.errors import GlcicError


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
            if discovery._is_private_dir(f"/run/user/{os.getuid()}", os.getuid())
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


# -- the /tmp/runtime-UID fallback, which another user could plant (issue 17, item 4) ---------

_KEY = Keys.generate().connection_fields()  # what a connection file carries
_linux_rule = pytest.mark.skipif(
    sys.platform in ("win32", "darwin"), reason="the XDG rule and its /tmp fallback"
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def fallback(tmp_path: Path, monkeypatch) -> Path:
    """The runtime folder's parent when there is no GLCIC_HOME and no usable XDG_RUNTIME_DIR or
    /run/user/UID: runtime-UID in a sticky, world-writable folder standing in for /tmp."""
    for name in ("GLCIC_HOME", "GLCIC_CONNECTION_FILE", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(discovery, "_is_private_dir", lambda path, uid: False)
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setattr(tempfile, "tempdir", str(shared))
    return shared / f"runtime-{os.getuid()}"


def _refused_by_both(pattern: str) -> str:
    """The daemon's start and every client refuse the folder alike; the daemon's message."""
    with pytest.raises(GlcicError, match=pattern) as refused:
        connection.write_connection_file("127.0.0.1", 5555, _KEY)
    with pytest.raises(GlcicError, match=pattern):
        connection.DaemonLock().acquire()
    with pytest.raises(protocol.UnsafeRuntimeDir, match=pattern):
        protocol.read_connection_file()
    with pytest.raises(protocol.UnsafeRuntimeDir, match=pattern):
        protocol.Client()
    message = str(refused.value)
    assert "XDG_RUNTIME_DIR" in message  # names a fix
    return message


@_linux_rule
def test_the_fallback_is_made_private_and_both_sides_use_it(fallback: Path) -> None:
    path = connection.write_connection_file("127.0.0.1", 5555, _KEY)
    assert path == fallback / "glcic" / "daemon.json" == protocol.default_connection_file()
    assert _mode(fallback) == 0o700 and _mode(fallback / "glcic") == 0o700
    assert protocol.read_connection_file().port == 5555


@_linux_rule
def test_a_fallback_others_can_write_in_is_refused_by_the_daemon_and_clients(
    fallback: Path, capsys
) -> None:
    from glcic.daemon import cli

    fallback.mkdir()
    fallback.chmod(0o777)  # as another user would leave it, to swap the folder inside later
    message = _refused_by_both("writable by other users")
    assert str(fallback) in message and f"rm -r {fallback}" in message
    assert not (fallback / "glcic").exists()  # nothing was put in it
    assert cli.main(["status"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "writable by other users" in error


@_linux_rule
def test_a_fallback_of_another_user_is_refused(fallback: Path, monkeypatch) -> None:
    fallback.mkdir(mode=0o700)
    other = os.getuid() + 1  # as if planted by user `other`: runtime-OURS belongs to them
    monkeypatch.setattr(os, "getuid", lambda: other)
    os.rename(fallback, fallback.parent / f"runtime-{other}")
    message = _refused_by_both("belongs to another user")
    assert "administrator" in message  # it is not ours to remove


@_linux_rule
def test_symlinks_planted_for_the_runtime_folders_are_refused_not_followed(
    fallback: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"  # a folder of the user's that a chmod 700 would break
    victim.mkdir()
    victim.chmod(0o755)
    fallback.mkdir(mode=0o700)
    (fallback / "glcic").symlink_to(victim)
    _refused_by_both("is a symbolic link")
    assert _mode(victim) == 0o755 and not list(victim.iterdir())
    (fallback / "glcic").unlink()
    fallback.rmdir()
    fallback.symlink_to(victim)
    _refused_by_both("is a symbolic link")
    assert _mode(victim) == 0o755 and not list(victim.iterdir())


@_linux_rule
def test_the_folder_above_may_be_open_to_all_only_if_sticky(fallback: Path) -> None:
    fallback.parent.chmod(0o777)  # not sticky: anyone could rename runtime-UID away
    message = _refused_by_both("writable by other users and not sticky")
    assert "administrator" in message


@_linux_rule
def test_the_runtime_folder_is_narrowed_through_a_handle_or_refused(fallback: Path) -> None:
    runtime = fallback / "glcic"
    runtime.mkdir(parents=True)
    fallback.chmod(0o700)
    runtime.chmod(0o755)  # readable by others: the daemon narrows it, clients accept it
    with pytest.raises(protocol.DaemonNotRunning) as absent:  # accepted: just no daemon yet
        protocol.read_connection_file()
    assert not isinstance(absent.value, protocol.UnsafeRuntimeDir)
    connection.write_connection_file("127.0.0.1", 5555, _KEY)
    assert _mode(runtime) == 0o700
    runtime.chmod(0o777)  # others could have put files in it (a symlink as daemon.lock...)
    _refused_by_both("writable by other users")


@_linux_rule
def test_group_write_is_refused_unless_the_group_is_the_users_own(fallback, monkeypatch) -> None:
    fallback.mkdir()
    fallback.chmod(0o770)  # umask 002
    monkeypatch.setattr(discovery, "_private_group", lambda gid, uid: False)
    _refused_by_both("writable by other users")
    monkeypatch.setattr(discovery, "_private_group", lambda gid, uid: True)  # a user private group
    connection.write_connection_file("127.0.0.1", 5555, _KEY)
    assert protocol.read_connection_file().port == 5555


@pytest.mark.skipif(os.name != "posix", reason="flock")
def test_a_daemon_waiting_for_the_lock_never_keeps_one_on_a_removed_file(tmp_path, monkeypatch):
    """A daemon that stops removes its lock file, then closes it. One that was waiting for that
    lock must not end up holding it on the removed file, where no client could see it."""
    import fcntl
    import threading

    monkeypatch.setenv("GLCIC_HOME", str(tmp_path / "home"))
    first = connection.DaemonLock()
    first.acquire()
    waiting = connection.DaemonLock()
    acquired = threading.Event()
    thread = threading.Thread(target=lambda: (waiting.acquire(), acquired.set()))
    thread.start()
    try:
        assert not acquired.wait(0.2)  # still held by the first
        first.release()  # removes the file, then lets go of the lock
        assert acquired.wait(5.0)
        assert waiting.path.read_text() == str(os.getpid())
        # The file clients open is the locked one.
        with open(waiting.path, "a+") as probe, pytest.raises(OSError):
            fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert connection.DaemonLock.is_held()
    finally:
        thread.join(5.0)
        waiting.release()
