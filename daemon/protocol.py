"""The glcic daemon's wire protocol and its thin client.

This one module is all a program needs to talk to `glcic-daemon`: the plugins copy it into Krita's
and GIMP's own Python, which have no numpy and no torch, so it uses only the standard library,
pyzmq and msgpack. The daemon imports its framing and limits from here too, so client and
server cannot drift apart. The protocol is documented in docs/protocol.md.

Messages are ZeroMQ multipart: [header, payload...]. The header is msgpack; payload frames
carry raw pixels (RGBA8) and masks (8-bit), never encoded, cut into frames of at most FRAME_LIMIT
bytes. The connection is ZeroMQ's CURVE: encrypted, and the daemon admits only the client key
pair from its owner-only connection file. While it waits, the client checks that the daemon
still holds its lock file, so a daemon that died is reported within a second.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import zmq

# Finding the daemon lives in its own module, which plugins carry beside this one.
if __package__ == "glcic.daemon":
    from glcic.daemon import discovery
elif __package__:  # Krita's plugin package
    from . import glcic_discovery as discovery  # type: ignore[attr-defined]
else:  # GIMP's plug-in folder
    import glcic_discovery as discovery  # type: ignore[no-redef]

PROTOCOL_VERSION = discovery.PROTOCOL_VERSION
CONNECTION_FILE_NAME = discovery.CONNECTION_FILE_NAME
LOCK_FILE_NAME = discovery.LOCK_FILE_NAME
APP_NAME = discovery.APP_NAME
FRAME_LIMIT = discovery.FRAME_LIMIT
MAX_FRAME_BYTES = discovery.MAX_FRAME_BYTES
LIVENESS_SECONDS = discovery.LIVENESS_SECONDS
ClientError = discovery.ClientError
DaemonNotRunning = discovery.DaemonNotRunning
UnsafeRuntimeDir = discovery.UnsafeRuntimeDir
NOT_RUNNING = discovery.NOT_RUNNING
STOPPED = discovery.STOPPED
DaemonTimeout = discovery.DaemonTimeout
ProtocolMismatch = discovery.ProtocolMismatch
CurveUnavailable = discovery.CurveUnavailable
require_curve = discovery.require_curve
default_runtime_dir = discovery.default_runtime_dir
check_runtime_dir = discovery.check_runtime_dir
default_connection_file = discovery.default_connection_file
Connection = discovery.Connection
read_connection_file = discovery.read_connection_file


#: How far past a hole the completion network reads, in working pixels (the same number as
#: glcic.networks.RECEPTIVE_FIELD_RADIUS; a test keeps them equal).
RECEPTIVE_FIELD_RADIUS = 152
#: The largest crop side the daemon works at (glcic.pipeline.DEFAULT_MAX_WORKING_SIDE).
MAX_WORKING_SIDE = 1024

#: How often a waiting client tells the daemon it is still there (see Client.complete).
KEEPALIVE_SECONDS = 1.0
#: How long `complete` waits for the daemon to confirm a cancel before giving up on it.
CANCEL_GRACE_SECONDS = 10.0

#: Operations that change nothing, so a lost reply may be retried on a fresh socket.
IDEMPOTENT = frozenset({"ping", "status", "models"})

# Stable error codes (the `code` of an `error` reply).
VERSION_MISMATCH = "version_mismatch"
BAD_REQUEST = "bad_request"
TOO_LARGE = "too_large"
UNKNOWN_MODEL = "unknown_model"
NO_MODEL = "no_model"
BUSY = "busy"
CANCELLED = "cancelled"
TIMEOUT = "timeout"
NOT_FOUND = "not_found"
SHUTTING_DOWN = "shutting_down"
BAD_INPUT = "bad_input"
INTERNAL = "internal"


class DaemonError(ClientError):
    """An `error` reply: a stable `code` and a human message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


# -- framing ---------------------------------------------------------------------------------
def pack(header: dict[str, Any], payload: Sequence[Any] = ()) -> list[Any]:
    """[header, payload...] ready for `send_multipart`: each payload buffer is cut, uncopied,
    into frames of at most FRAME_LIMIT bytes (the receiver joins them back)."""
    frames: list[Any] = [msgpack.packb(header, use_bin_type=True)]
    for part in payload:
        view = memoryview(part).cast("B")
        frames += [view[i : i + FRAME_LIMIT] for i in range(0, len(view), FRAME_LIMIT)]
    return frames


#: A header is a small map of scalars: refuse anything that could make unpacking expensive.
_HEADER_LIMITS = {
    "strict_map_key": True, "max_bin_len": 0, "max_str_len": 1 << 16, "max_array_len": 1 << 10,
    "max_map_len": 1 << 8, "max_ext_len": 0,
}  # fmt: skip


def unpack(frames: Sequence[Any]) -> tuple[dict[str, Any], list[Any]]:
    """Decode the header; raises ValueError or msgpack's errors. Frames may be bytes or zero-copy
    zmq.Frame objects; payload frames come back as bytes or memoryviews, uncopied."""
    if not frames:
        raise ValueError("a message needs a header")
    buffers = [f.buffer if isinstance(f, zmq.Frame) else f for f in frames]  # no copies
    header = msgpack.unpackb(buffers[0], raw=False, **_HEADER_LIMITS)
    if not isinstance(header, dict):
        raise ValueError("the header is not a map")
    return header, buffers[1:]


# -- what to send ---------------------------------------------------------------------------
def context_box(
    box: tuple[int, int, int, int], image_size: tuple[int, int], max_hole_side: int
) -> tuple[int, int, int, int]:
    """The part of an image to send for a selection inside `box` = (x0, y0, x1, y1).

    The daemon reads an image only around each hole: the hole's box plus a context that grows as
    a thick hole is scaled down to the model's trained hole size (`max_hole_side`, from the
    model's metadata), shifted inward at image edges. This is a bound on all of that, computed
    from the selection's box alone, so a plugin can read just these pixels from a huge layer and
    get the same fill, bit for bit, as for the whole layer. Returns (x0, y0, x1, y1) inside
    `image_size` = (width, height).
    """
    x0, y0, x1, y1 = box
    width, height = image_size
    box_w, box_h = max(1, x1 - x0), max(1, y1 - y0)
    # A hole's thickness is at most its box's short side (plus rounding and, for huge holes,
    # the subsampling step of the distance transform).
    subsampling = math.ceil(math.sqrt(box_w * box_h / 4_000_000))
    thickness = min(box_w, box_h) + 2 + 2 * subsampling
    scale = min(
        1.0,
        max_hole_side / thickness,
        (MAX_WORKING_SIDE - 2 * RECEPTIVE_FIELD_RADIUS) / max(box_w, box_h),
    )
    context = math.ceil(RECEPTIVE_FIELD_RADIUS / scale)
    x_range = _crop_span(x0, x1, width, context)
    y_range = _crop_span(y0, y1, height, context)
    return (x_range[0], y_range[0], x_range[1], y_range[1])


def _crop_span(start: int, end: int, limit: int, context: int) -> tuple[int, int]:
    """Where crops of holes inside [start, end) can lie along one axis of length `limit`: the
    hole plus `context` each side, or a crop of that length shifted inward at an edge."""
    length = min(limit, end - start + 2 * context)
    return max(0, min(start - context, limit - length)), min(limit, max(end + context, length))


# -- the client ------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompletionResult:
    """The changed rectangle of the image, as RGBA8 rows, and where it goes."""

    x: int
    y: int
    width: int
    height: int
    rgba: bytes
    model: str
    seconds: float


class Client:
    """A connection to the running daemon. One thread at a time per Client."""

    def __init__(
        self, connection_file: Path | None = None, timeout: float = 10.0,
        context: zmq.Context | None = None,
    ) -> None:  # fmt: skip
        self.connection = read_connection_file(connection_file)  # refuses other versions
        self._next_check = 0.0
        self._check_alive()  # a file left by a killed daemon costs no wait on a socket
        require_curve()
        self.timeout = timeout
        self.context = context or zmq.Context.instance()
        self.socket: zmq.Socket | None = None
        self._open()

    def _open(self) -> None:
        self.close()
        self.socket = self.connection.socket(self.context)

    def _check_alive(self) -> None:
        """Raise DaemonNotRunning if the daemon is gone (checked every LIVENESS_SECONDS)."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + LIVENESS_SECONDS
            if not self.connection.daemon_alive():
                raise DaemonNotRunning(STOPPED.format(pid=self.connection.pid))

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --
    def _send(self, op: str, fields: dict[str, Any], payload: Sequence[bytes] = ()) -> str:
        request_id = uuid.uuid4().hex
        header = {"v": PROTOCOL_VERSION, "id": request_id, "op": op, **fields}
        assert self.socket is not None
        self.socket.send_multipart(pack(header, payload), copy=False)
        return request_id

    def _receive(
        self, request_id: str, deadline: float, waited: float | None = None
    ) -> tuple[dict[str, Any], list[bytes]]:
        """The next message for `request_id` (others, e.g. late replies, are dropped); while
        none comes, whether the daemon still runs is checked every LIVENESS_SECONDS.

        `waited` is the whole wait the caller allowed, for the timeout's message."""
        assert self.socket is not None
        while True:
            wait = min(deadline - time.monotonic(), LIVENESS_SECONDS)
            if wait <= 0 or not self.socket.poll(int(wait * 1000) + 1):
                self._check_alive()
                if time.monotonic() < deadline:
                    continue
                raise DaemonTimeout(
                    f"the glcic daemon did not answer within {waited or self.timeout:g} s "
                    "(is it busy or stuck? see: glcic-daemon status)"
                )
            try:
                header, payload = unpack(self.socket.recv_multipart())
            except (ValueError, TypeError, msgpack.UnpackException):
                raise ClientError("the daemon sent a malformed reply") from None
            if header.get("id") == request_id:
                if header.get("type") == "error":
                    raise DaemonError(str(header.get("code")), str(header.get("message")))
                return header, payload

    def request(self, op: str, timeout: float | None = None, **fields: Any) -> dict[str, Any]:
        """A simple request with one reply; idempotent ones are retried once on a new socket."""
        limit = self.timeout if timeout is None else timeout
        retries = 1 if op in IDEMPOTENT else 0
        while True:
            request_id = self._send(op, fields)
            try:
                return self._receive(request_id, time.monotonic() + limit, limit)[0]
            except DaemonTimeout:
                if not retries:
                    raise
                retries -= 1
                self._open()  # a fresh socket drops whatever the old one had queued

    # -- operations --
    def ping(self) -> dict[str, Any]:
        return self.request("ping")

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def models(self) -> list[dict[str, Any]]:
        return list(self.request("models")["models"])

    def hole_size_limit(self, model: str | None = None) -> int:
        """The largest hole side `model` (None: the default) was trained on; raises DaemonError
        when the daemon has no such model."""
        for entry in self.models():
            if entry["name"] == model or (model is None and entry["default"]):
                metadata = entry.get("metadata") or {}
                return int(metadata.get("hole_size_range", (96, 128))[1])
        if model is not None:
            raise DaemonError(UNKNOWN_MODEL, f"the daemon has no model named {model!r}")
        raise DaemonError(NO_MODEL, "the daemon has no default model (see: glcic-daemon models)")

    def reload(self) -> dict[str, Any]:
        return self.request("reload", timeout=max(self.timeout, 60.0))

    def shutdown(self) -> dict[str, Any]:
        return self.request("shutdown")

    def cancel(self, request_id: str) -> dict[str, Any]:
        return self.request("cancel", target=request_id)

    def complete(
        self, width: int, height: int, rgba: bytes, mask: bytes, model: str | None = None,
        blend: str = "poisson", progress: Callable[[str, float], None] | None = None,
        cancel: threading.Event | None = None, timeout: float = 600.0,
        keepalive: float | None = KEEPALIVE_SECONDS,
    ) -> CompletionResult:  # fmt: skip
        """Fill `mask` (8-bit, 255 = fill) in an RGBA8 image; returns the changed rectangle.

        `progress(stage, fraction)` is called as the daemon reports; setting `cancel` asks the
        daemon to stop, and this raises DaemonError with code "cancelled" when the daemon
        confirms, or after CANCEL_GRACE_SECONDS if it does not (a dead or stuck daemon must not
        hold the caller until `timeout`). A result that arrives after `cancel` was set is
        discarded the same way: the caller asked for nothing more. While waiting, an
        `alive` message goes out every `keepalive` seconds: if this process dies (a host kills
        its plug-in on Cancel, or crashes), the daemon drops the request after a few missed
        ones instead of computing a result nobody will read. None turns that off.
        """
        fields: dict[str, Any] = {"width": width, "height": height, "blend": blend}
        if model:
            fields["model"] = model
        if keepalive is not None:
            fields["keepalive"] = keepalive
        request_id = self._send("complete", fields, [rgba, mask])
        deadline = time.monotonic() + timeout
        next_alive = time.monotonic() + keepalive if keepalive is not None else float("inf")
        cancel_sent = False
        cancelled = DaemonError(CANCELLED, "cancelled")
        while True:
            if cancel is not None and cancel.is_set() and not cancel_sent:
                self._send("cancel", {"target": request_id})
                cancel_sent = True
                deadline = min(deadline, time.monotonic() + CANCEL_GRACE_SECONDS)
            now = time.monotonic()
            if keepalive is not None and now >= next_alive:
                self._send("alive", {"target": request_id})
                next_alive = now + keepalive
            step_deadline = min(deadline, next_alive, now + 0.1 if cancel else deadline)
            try:
                header, payload = self._receive(request_id, step_deadline, timeout)
            except DaemonTimeout:
                if time.monotonic() >= deadline:
                    if cancel_sent:
                        raise cancelled from None
                    self._send("cancel", {"target": request_id})
                    raise
                continue
            kind = header.get("type")
            if kind == "progress":
                if progress is not None:
                    progress(str(header.get("stage")), float(header.get("fraction", 0.0)))
                continue
            if kind == "result":
                if cancel is not None and cancel.is_set():
                    raise cancelled
                width, height = int(header["width"]), int(header["height"])
                rgba = b"".join(payload)  # the daemon cuts it in frames of FRAME_LIMIT bytes
                if len(rgba) == width * height * 4:
                    return CompletionResult(
                        x=int(header["x"]), y=int(header["y"]), width=width, height=height,
                        rgba=rgba, model=str(header.get("model", "")),
                        seconds=float(header.get("seconds", 0.0)),
                    )  # fmt: skip
            raise ClientError(f"unexpected reply from the daemon: {kind!r}")
