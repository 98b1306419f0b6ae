"""Atomic file writes: a reader sees either the old file or the whole new one, never a torn one.

Model files, checkpoints and connection files are written this way, because a crash or a full
disk halfway through a plain write would destroy the previous good copy.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

#: The process's umask, read once at import (reading it means setting it, which is not
#: thread-safe); a new file gets the permissions a plain `open()` would have given it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`.

    The temporary file lives in the same directory so the final `os.replace` is a rename within
    one file system, which POSIX and Windows both perform atomically. On any exception the
    temporary file is removed and `path` is left untouched. `mode`, if given, is applied before
    the rename so the file never exists at `path` with wider permissions. Without it, the file
    keeps the permissions of the one it replaces, or gets a plain new file's (not the owner-only
    ones of the temporary file, which would hide a user's output from the rest of their group).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if mode is None:
            try:
                mode = stat.S_IMODE(target.stat().st_mode)
            except FileNotFoundError:
                mode = 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    _fsync_directory(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)


def atomic_write_with(
    path: str | os.PathLike[str], writer: Callable[[Path], None], mode: int | None = None
) -> None:
    """Call `writer(tmp_path)` to produce the file, then move it into place atomically."""
    with atomic_path(path, mode=mode) as tmp:
        writer(tmp)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable; not possible (nor needed) on Windows."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
