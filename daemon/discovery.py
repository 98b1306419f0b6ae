"""Finding the glcic daemon: its runtime folder, its connection file, and whether it still runs.

Half of the daemon's client-side protocol (the other half, messages and the client, is
daemon/protocol.py, which imports this). Plugins carry a copy of both files (as glcic_client.py
and glcic_discovery.py) into Krita's and GIMP's own Python, so this uses only the standard
library and pyzmq. The daemon uses these same functions to place its files, so the two sides
always agree on where to look.

The runtime folder and the connection file must be the user's own and closed to others: whoever
could write there could point a client at another daemon or read its keys. While a client
waits, the daemon's OS lock on its lock file tells it whether the daemon still runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

PROTOCOL_VERSION = 2
CONNECTION_FILE_NAME = "daemon.json"
#: Beside the connection file: the daemon holds an OS lock on it all its life.
LOCK_FILE_NAME = "daemon.lock"
APP_NAME = "glcic"

#: The largest payload frame; bigger buffers are cut into frames of this size.
FRAME_LIMIT = 1 << 20
#: The largest frame either side's socket accepts (ZMQ_MAXMSGSIZE, CURVE's framing and a header
#: included). It binds the CURVE handshake too: a peer without the keys can make the daemon hold
#: no more than this before it is refused.
MAX_FRAME_BYTES = FRAME_LIMIT + (64 << 10)
#: How often a client with nothing to read checks that the daemon still runs.
LIVENESS_SECONDS = 0.5


class ClientError(Exception):
    """Base of everything this client raises; the message is meant for the user."""


class DaemonNotRunning(ClientError): ...


class UnsafeRuntimeDir(DaemonNotRunning):
    """The folder for the daemon's connection file (or the one holding it) is one another user
    could tamper with; the message names a fix."""


#: The whole story when no daemon runs (no connection file); other `DaemonNotRunning` messages
#: carry a detail worth showing (a refused or unreadable file, a refused connection).
NOT_RUNNING = "the glcic daemon is not running (start it with: glcic-daemon start)"
#: A daemon that died (killed, crashed) or was replaced by another since the file was read.
STOPPED = "the glcic daemon stopped (pid {pid}); start it again with: glcic-daemon start"


class DaemonTimeout(ClientError): ...


class ProtocolMismatch(ClientError): ...


class CurveUnavailable(ClientError):
    """This Python's pyzmq cannot encrypt (its libzmq was built without libsodium)."""


def require_curve() -> None:
    if not zmq.has("curve"):
        raise CurveUnavailable(
            f"this Python's ZeroMQ (pyzmq {zmq.__version__}, libzmq {zmq.zmq_version()}) has no "
            "CURVE encryption, which the glcic daemon requires: install a pyzmq that has it "
            "(pip install --upgrade pyzmq: its wheels include it; on Debian or Ubuntu the "
            "python3-zmq package, whose libzmq5 is built with libsodium)"
        )


def default_runtime_dir() -> Path:
    """Where the daemon puts its connection file: GLCIC_HOME/run when that is set, else a
    per-user runtime folder. The daemon and every plugin compute it with this one function
    (plugins carry a copy of this file), so they always agree; a library's rule could differ
    between the daemon's copy and a plugin's."""
    home = os.environ.get("GLCIC_HOME")
    if home:
        return Path(home).expanduser().resolve() / "run"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "Temp" / APP_NAME
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "TemporaryItems" / APP_NAME
    uid = os.getuid()
    for candidate in (os.environ.get("XDG_RUNTIME_DIR", ""), f"/run/user/{uid}"):
        if candidate and _is_private_dir(candidate, uid):
            return Path(candidate) / APP_NAME
    return Path(tempfile.gettempdir()) / f"runtime-{uid}" / APP_NAME


def _is_private_dir(path: str, uid: int) -> bool:
    """A real folder of this user that nobody else can enter, as XDG asks of a runtime dir."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid and not info.st_mode & 0o077


def check_runtime_dir(folder: Path, create: bool = False) -> None:
    """Refuse a runtime folder another user could tamper with; raises UnsafeRuntimeDir.

    The daemon (create=True) and every client apply the same rules to the same folder
    (`default_runtime_dir()`): the folder holding it must be this user's and not writable by
    others, who could otherwise swap the runtime folder for theirs (a planted /tmp/runtime-UID);
    the one above that may be writable by all only if it is sticky, like /tmp. The runtime
    folder itself must be a real folder (not a symlink) of this user that others cannot write
    in. The daemon makes missing folders with mode 700, and narrows its own runtime folder to
    700 through a handle opened without following symlinks, never chmod-ing a path. A client
    only checks: a folder not there yet just means no daemon has run.
    """
    if os.name != "posix":
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        return
    uid = os.getuid()
    parent, above = folder.parent, folder.parent.parent
    if create:
        above.mkdir(parents=True, exist_ok=True)  # e.g. a new GLCIC_HOME's own parent
    try:
        info = os.stat(above)  # /tmp may be a symlink (to /private/tmp...): follow it
    except FileNotFoundError:
        return
    if info.st_uid not in (uid, 0):
        _refuse(folder, above, f"belongs to another user (uid {info.st_uid})", False)
    if _writable_by_others(info, uid) and not info.st_mode & stat.S_ISVTX:
        _refuse(folder, above, "is writable by other users and not sticky", False)
    for path in (parent, folder):
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)  # never follows a symlink planted at `path`
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISLNK(info.st_mode):
            _refuse(folder, path, "is a symbolic link", True)
        if not stat.S_ISDIR(info.st_mode):
            _refuse(folder, path, "is not a folder", True)
        if info.st_uid != uid:
            _refuse(folder, path, f"belongs to another user (uid {info.st_uid})", False)
        if _writable_by_others(info, uid):
            _refuse(folder, path, "is writable by other users", True)
    if create and info.st_mode & 0o077:
        _narrow_to_owner(folder, info)


def _writable_by_others(info: os.stat_result, uid: int) -> bool:
    """Writable by all, or by a group that is not this user's own private group."""
    if info.st_mode & stat.S_IWOTH:
        return True
    return bool(info.st_mode & stat.S_IWGRP) and not _private_group(info.st_gid, uid)


def _private_group(gid: int, uid: int) -> bool:
    """The group made for this user alone (the user-private-group convention: same name, no
    other members), whose write bit (umask 002) lets nobody else in."""
    try:
        import grp
        import pwd

        user = pwd.getpwuid(uid)
        group = grp.getgrgid(gid)
    except (ImportError, KeyError):
        return False
    return (
        user.pw_gid == gid and group.gr_name == user.pw_name and set(group.gr_mem) <= {user.pw_name}
    )


def _narrow_to_owner(folder: Path, seen: os.stat_result) -> None:
    """chmod 700 the very folder checked: through a handle that refuses a symlink."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(folder, flags)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino) or now.st_uid != os.getuid():
            _refuse(folder, folder, "was replaced while being checked", True)
        os.fchmod(fd, 0o700)
    finally:
        os.close(fd)


def _refuse(folder: Path, path: Path, problem: str, removable: bool) -> None:
    if os.environ.get("GLCIC_HOME"):
        elsewhere = "set GLCIC_HOME to a folder of yours that only you can write to"
    else:
        elsewhere = "set XDG_RUNTIME_DIR to a folder of yours with mode 700"
    fix = f"remove it (rm -r {path}) or {elsewhere}" if removable else (
        f"have its owner or an administrator remove it, or {elsewhere}"
    )  # fmt: skip
    raise UnsafeRuntimeDir(
        f"refusing the runtime folder {folder}: {path} {problem}, so another user could swap "
        f"the daemon's files; {fix}"
    )


def default_connection_file() -> Path:
    explicit = os.environ.get("GLCIC_CONNECTION_FILE")
    return Path(explicit) if explicit else default_runtime_dir() / CONNECTION_FILE_NAME


@dataclass(frozen=True)
class Connection:
    """A connection file: where the daemon listens and the CURVE keys (raw 32 bytes) to reach it."""

    host: str
    port: int
    pid: int
    protocol: int
    server_key: bytes  # the daemon's public key
    client_key: bytes  # the clients' public key, the only one the daemon admits
    client_secret: bytes  # its secret key (the file's "key")
    path: Path = Path()  # the connection file; the daemon's lock file lies beside it

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    def socket(self, context: zmq.Context) -> zmq.Socket:
        """A DEALER connected to the daemon over CURVE (encrypted, admitted with these keys)."""
        socket = context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        if ":" in self.host:
            socket.setsockopt(zmq.IPV6, 1)
        socket.curve_serverkey = self.server_key
        socket.curve_publickey = self.client_key
        socket.curve_secretkey = self.client_secret
        try:
            socket.connect(self.address)
        except zmq.ZMQError as error:
            socket.close(linger=0)
            raise DaemonNotRunning(
                f"cannot connect to the daemon at {self.address} ({error}); "
                "restart it with: glcic-daemon start"
            ) from None
        return socket

    def daemon_alive(self) -> bool:
        """Whether the daemon that wrote this file still runs: it holds an OS lock on the lock
        file beside it all its life, and the OS drops the lock however the daemon ends. The lock
        file holds the daemon's pid, so a daemon started since does not pass for this one. True
        when this cannot be told (a copied connection file, a file system without locks)."""
        try:
            handle = open(self.path.parent / LOCK_FILE_NAME, "rb")  # noqa: SIM115
        except FileNotFoundError:  # a clean exit removes the connection file, then the lock
            return self.path.exists()
        except OSError:
            return True
        with handle:
            try:
                if not _lock_free(handle):
                    return handle.read(32).strip() in (b"", str(self.pid).encode())
            except OSError:  # e.g. Windows: a locked byte cannot be read
                return True
            return False


def _lock_free(handle: Any) -> bool:
    """Whether nobody holds the lock on `handle`'s file (taken for an instant to find out)."""
    if os.name == "nt":  # pragma: no cover - Windows only
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return True
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    return True


def _check_private(path: Path) -> None:
    """Refuse a connection file another user could have written or read: its keys are the only
    thing keeping other users of the machine away from the daemon (and the images sent to it)."""
    if os.name != "posix":
        return
    info = path.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise DaemonNotRunning(
            f"refusing the connection file {path}: it must belong to you and be readable by you "
            "only (mode 600); remove it and run: glcic-daemon start"
        )


def read_connection_file(path: Path | None = None) -> Connection:
    if path is None and not os.environ.get("GLCIC_CONNECTION_FILE"):
        check_runtime_dir(default_runtime_dir())  # the daemon refuses the same folders
    path = path or default_connection_file()
    try:
        _check_private(path)
        document = json.loads(path.read_text(encoding="utf-8"))
        version = int(document["protocol"])
        if version != PROTOCOL_VERSION:  # first: another version's file has other fields
            raise ProtocolMismatch(
                f"the running daemon speaks protocol {version}, this client {PROTOCOL_VERSION}: "
                "update glcic (and reinstall the plugin) so both match"
            )
        return Connection(
            host=str(document["host"]), port=int(document["port"]), pid=int(document["pid"]),
            protocol=version, server_key=_key(document["server_key"]),
            client_key=_key(document["client_key"]), client_secret=_key(document["key"]),
            path=path,
        )  # fmt: skip
    except FileNotFoundError:
        raise DaemonNotRunning(NOT_RUNNING) from None
    except (OSError, ValueError, KeyError, TypeError, OverflowError) as error:
        raise DaemonNotRunning(
            f"the daemon's connection file {path} is unreadable ({error}); "
            "restart it with: glcic-daemon start"
        ) from None


def _key(text: str) -> bytes:
    key = bytes.fromhex(text)
    if len(key) != 32:
        raise ValueError("a CURVE key is 32 bytes")
    return key
