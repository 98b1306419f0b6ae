"""The daemon's connection file and its one-daemon-per-user lock.

The connection file (protocol version, host, port, pid, secret key) is written atomically and
readable by its owner only: the key is what keeps other users of the machine out. The lock is an
OS file lock held for the daemon's whole life, so a daemon killed without cleaning up leaves a
lock nobody holds: the next start sees that, removes the stale files, and takes over.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import IO

from glcic.atomic import atomic_write_bytes
from glcic.daemon.protocol import CONNECTION_FILE_NAME, PROTOCOL_VERSION, default_runtime_dir
from glcic.errors import GlcicError

LOCK_FILE_NAME = "daemon.lock"


class AlreadyRunning(GlcicError):
    """Another daemon of this user holds the lock."""


def connection_file_path() -> Path:
    return default_runtime_dir() / CONNECTION_FILE_NAME


def new_key() -> bytes:
    return secrets.token_bytes(32)


def write_connection_file(host: str, port: int, key: bytes) -> Path:
    document = {
        "protocol": PROTOCOL_VERSION,
        "host": host,
        "port": port,
        "pid": os.getpid(),
        "key": key.hex(),
    }
    path = connection_file_path()
    _private_dir(path.parent)
    atomic_write_bytes(path, json.dumps(document, indent=2).encode(), mode=0o600)
    return path


def remove_connection_file() -> None:
    with contextlib.suppress(FileNotFoundError):
        connection_file_path().unlink()


def _private_dir(path: Path) -> None:
    """Create the runtime folder for this user only, and refuse one somebody else controls
    (e.g. planted in /tmp): whoever owns the folder could swap the files in it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o700)
    if os.name != "posix":
        return
    info = os.lstat(path)
    if info.st_uid != os.getuid() or info.st_mode & 0o077 or not stat.S_ISDIR(info.st_mode):
        raise GlcicError(
            f"{path} belongs to another user or others can enter it; remove it, or set "
            "XDG_RUNTIME_DIR to a folder of yours with mode 700"
        )


class DaemonLock:
    """Held while a daemon runs; `acquire` fails with AlreadyRunning if another holds it."""

    def __init__(self) -> None:
        self.path = default_runtime_dir() / LOCK_FILE_NAME
        self.handle: IO[str] | None = None

    def acquire(self) -> None:
        _private_dir(self.path.parent)
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the daemon's life
        if not _try_lock(handle):
            handle.close()
            raise AlreadyRunning("another glcic daemon is already running for this user")
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
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
        if not path.exists():
            return False
        with open(path, "a+", encoding="utf-8") as handle:
            if _try_lock(handle):
                _unlock(handle)
                return False
            return True


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
