"""The daemon's own files: a private log folder, and plain words for a write that fails.

The log folder is the owner's only (700) and every file in it too (600): logs name the images
and models a user works on. A file that already exists with wider permissions is narrowed when
the daemon opens it, and so is the folder.

A write that fails because the disk is full must say so in one line, with the path, not as a
traceback (or not at all, when the message itself cannot be written to a log on that disk).
"""

from __future__ import annotations

import contextlib
import errno
import logging.handlers
import os
import stat
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from glcic.errors import GlcicError
from glcic.paths import log_dir

#: The error numbers of a write that found no room: a full disk, or a used-up quota.
NO_ROOM = frozenset(
    code for code in (errno.ENOSPC, getattr(errno, "EDQUOT", None)) if code is not None
)


def write_failed(error: OSError, path: str | os.PathLike[str] | None = None) -> GlcicError:
    """The user's one line for a failed write of `path` (or the path the error names)."""
    where = path if path is not None else error.filename
    target = f"cannot write {where}" if where else "cannot write a file"
    if error.errno == errno.ENOSPC:
        return GlcicError(f"the disk is full: {target}; free some space and try again")
    if error.errno in NO_ROOM:
        return GlcicError(f"the disk quota is used up: {target}; free some space and try again")
    return GlcicError(f"{target}: {error.strerror or error}")


def private_log_dir() -> Path:
    """The log folder, made or narrowed to 700, with the files in it narrowed to 600."""
    folder = log_dir()
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.name == "posix":
            os.chmod(folder, 0o700)
            for entry in os.scandir(folder):
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(info.st_mode) and info.st_mode & 0o077:
                    os.chmod(entry.path, 0o600)
    except OSError as error:
        raise write_failed(error, folder) from None
    return folder


def _private_fd(path: Path) -> int:
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    return _narrowed(os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600))


def _narrowed(fd: int) -> int:
    if hasattr(os, "fchmod"):  # an existing file keeps its mode through O_CREAT: narrow it
        os.fchmod(fd, 0o600)
    return fd


def open_private(path: Path) -> IO[bytes]:
    """`path` emptied and opened for appending, readable by its owner only. Appending, and
    readable through the same descriptor, so `trim_to_tail` can keep only its end while the
    daemon writes to it."""
    flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    return open(_narrowed(os.open(path, flags, 0o600)), "ab")


class PrivateLogFile(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are the owner's only, and which says once, in one line,
    that it cannot write (a full disk) instead of a traceback for every record."""

    def __init__(self, path: Path, **options: Any) -> None:
        self._warned = False
        super().__init__(path, **options)

    def _open(self) -> IO[str]:  # also after each rollover: the new file is private too
        fd = _private_fd(Path(self.baseFilename))
        return open(fd, "a", encoding=self.encoding, errors=self.errors)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging API
        if self._warned:
            return
        self._warned = True
        error = sys.exc_info()[1]
        reason = write_failed(error, self.baseFilename) if isinstance(error, OSError) else error
        with contextlib.suppress(Exception):
            print(f"glcic-daemon: warning: the log stops here: {reason}", file=sys.stderr)


#: daemon.stderr is kept under this size: what escapes logging (a C library's warnings, a
#: thread's traceback) could otherwise repeat for the daemon's whole life.
STDERR_LIMIT = 1 << 20
#: When over the limit, this much of its end is kept.
STDERR_KEEP = 256 << 10


def trim_to_tail(fd: int, limit: int = STDERR_LIMIT, keep: int = STDERR_KEEP) -> bool:
    """If the file open on `fd` (read-write, in append mode: `open_private`) is over `limit`
    bytes, keep only its last `keep` bytes; returns whether it trimmed. Best effort: a line
    written in the instant between reading the tail and truncating is lost."""
    if os.fstat(fd).st_size <= limit:
        return False
    size = os.fstat(fd).st_size  # read again just before: the window for a lost line is tiny
    tail = os.pread(fd, keep, max(0, size - keep))
    os.ftruncate(fd, 0)
    os.write(fd, b"[earlier output trimmed]\n" + tail)
    return True


def keep_stderr_bounded(interval: float = 30.0) -> None:
    """Check the process's stderr (a detached daemon's daemon.stderr) every `interval` seconds
    and trim it with `trim_to_tail`; a pipe or terminal is left alone."""
    if not hasattr(os, "pread"):  # Windows: no positioned reads; the file is emptied per start
        return
    try:
        if not stat.S_ISREG(os.fstat(2).st_mode):
            return
    except OSError:
        return

    def watch() -> None:
        while True:
            time.sleep(interval)
            with contextlib.suppress(OSError):
                trim_to_tail(2)

    threading.Thread(target=watch, name="stderr-bound", daemon=True).start()
