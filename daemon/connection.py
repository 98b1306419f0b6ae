"""The daemon's connection file and its one-daemon-per-user lock.

The connection file (protocol version, host, port, pid, CURVE keys) is written atomically and
readable by its owner only: the keys are what keep other users of the machine out. The lock is an
OS file lock held for the daemon's whole life, so a daemon killed without cleaning up leaves a
lock nobody holds: the next start sees that, removes the stale files, and takes over, and a
waiting client sees it too (the daemon is gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import IO

from glcic.atomic import atomic_write_bytes
from glcic.daemon.files import write_failed
from glcic.daemon.protocol import (
    CONNECTION_FILE_NAME,
    LOCK_FILE_NAME,
    PROTOCOL_VERSION,
    UnsafeRuntimeDir,
    check_runtime_dir,
    default_runtime_dir,
)
from glcic.errors import GlcicError


class AlreadyRunning(GlcicError):
    """Another daemon of this user holds the lock."""


def connection_file_path() -> Path:
    return default_runtime_dir() / CONNECTION_FILE_NAME


def write_connection_file(host: str, port: int, keys: dict[str, str]) -> Path:
    """`keys`: the CURVE keys clients need (security.Keys.connection_fields)."""
    document = {
        "protocol": PROTOCOL_VERSION,
        "host": host,
        "port": port,
        "pid": os.getpid(),
        **keys,
    }
    path = connection_file_path()
    _private_dir(path.parent)
    try:
        atomic_write_bytes(path, json.dumps(document, indent=2).encode(), mode=0o600)
    except OSError as error:  # a full disk: one line naming it, not a traceback
        raise write_failed(error, path) from None
    return path


def remove_connection_file() -> None:
    with contextlib.suppress(FileNotFoundError):
        connection_file_path().unlink()


def _private_dir(path: Path, create: bool = True) -> None:
    """Create the runtime folder for this user only, and refuse one somebody else controls
    (e.g. planted in /tmp): whoever owns the folder could swap the files in it. The rules are
    the clients' too (protocol.check_runtime_dir), so both sides refuse the same folders."""
    try:
        check_runtime_dir(path, create=create)
    except UnsafeRuntimeDir as error:
        raise GlcicError(str(error)) from None
    except OSError as error:
        raise write_failed(error, error.filename or path) from None


class DaemonLock:
    """Held while a daemon runs; `acquire` fails with AlreadyRunning if another holds it."""

    def __init__(self) -> None:
        self.path = default_runtime_dir() / LOCK_FILE_NAME
        self.handle: IO[str] | None = None

    def acquire(self) -> None:
        _private_dir(self.path.parent)
        while True:
            try:
                handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for life
            except OSError as error:
                raise write_failed(error, self.path) from None
            if not _lock_with_retries(handle):
                handle.close()
                raise AlreadyRunning("another glcic daemon is already running for this user")
            if _still_named(handle, self.path):
                break
            # The daemon that held it removed the file while this one waited: the lock is on a
            # file no client can see. Start again on the file that the path names now.
            handle.close()
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(str(os.getpid()))
            handle.flush()
        except OSError as error:  # a full disk: one line naming it, not a traceback
            with contextlib.suppress(OSError):
                handle.close()
            raise write_failed(error, self.path) from None
        self.handle = handle

    def release(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self.handle.close()
            self.handle = None

    @staticmethod
    def is_held() -> bool:
        """Whether a live daemon holds the lock (probing takes and drops it if free)."""
        path = default_runtime_dir() / LOCK_FILE_NAME
        _private_dir(path.parent, create=False)  # never open a file in a folder others control
        if not path.exists():
            return False
        with open(path, "a+", encoding="utf-8") as handle:
            if _lock_with_retries(handle):
                _unlock(handle)
                return False
            return True


def _lock_with_retries(handle: IO[str]) -> bool:
    """Take the lock, trying for about a second: a client checking whether the daemon still
    runs (discovery.Connection.daemon_alive) holds it for an instant, which must not read as a
    daemon holding it."""
    for _ in range(50):
        if _try_lock(handle):
            return True
        time.sleep(0.02)
    return False


def _still_named(handle: IO[str], path: Path) -> bool:
    """Whether `path` still names the open file `handle` (not removed or replaced since)."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(handle.fileno())
    return (named.st_dev, named.st_ino) == (opened.st_dev, opened.st_ino)


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(handle: IO[str]) -> bool:
        try:
            handle.seek(0)
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(handle: IO[str]) -> None:
        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(handle: IO[str]) -> bool:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(handle: IO[str]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
