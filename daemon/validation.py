"""Checking what a client sends, before anything runs.

Every rule a request must pass lives here as plain functions over a header and its payload
frames, so each refusal (and its stable error code) can be tested without a socket or a running
daemon. A request that passes `validate_complete` is a `Job` the worker can run without further
checks; one that fails raises `RequestError`, which the server turns into an `error` reply.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import msgpack
import numpy as np
import zmq

from glcic.daemon import protocol
from glcic.pipeline import BLEND_MODES

#: A job is dropped once its client has missed this many `alive` periods.
ABANDON_AFTER = 3
KEEPALIVE_RANGE = (0.1, 60.0)
ABANDONED_MESSAGE = "cancelled: the client stopped sending 'alive'"
HEADER_FRAME_LIMIT = 64 * 1024


class RequestError(Exception):
    """A refused request: a stable `code` and a message for the user.

    `request_id` is set when the refusal comes before the header could be trusted (the id the
    client is most likely waiting for); None means the caller knows the id.
    """

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass
class Job:
    request_id: str
    identity: bytes
    width: int
    height: int
    pixels: Any  # buffer of height*width*4 bytes
    mask: Any  # buffer of height*width bytes
    model: str | None
    blend: str
    timeout: float
    deadline: float = float("inf")  # set when the job starts: queueing time does not count
    cancel: threading.Event = field(default_factory=threading.Event)
    #: Seconds between the client's `alive` messages, if it promised them (None: it did not).
    keepalive: float | None = None
    last_seen: float = field(default_factory=time.monotonic)

    def abandoned(self, read_until: float) -> bool:
        """Whether a client that promised `alive` messages has missed several: it is gone
        (a host killed its plug-in, or crashed), so nobody is waiting for this result.

        `read_until` is the last moment up to which the daemon has read every message that
        arrived (the server's `messages_read_at`), not the time now: while the daemon is too
        busy to read, the `alive` messages wait in its socket, and a live client must not be
        judged gone for that."""
        return (
            self.keepalive is not None
            and read_until - self.last_seen > ABANDON_AFTER * self.keepalive
        )


class ModelCatalog(Protocol):
    """What validation asks of the daemon's models (a ModelManager; a stub in tests)."""

    directory: Path

    def exists(self, name: str) -> bool: ...

    def default_name(self) -> str | None: ...


def read_message(frames: Sequence[Any]) -> tuple[dict[str, Any], list[Any]]:
    """The header and payload of [header, payload...] (bytes or zmq.Frame objects), once its
    protocol version and request id check out. Who sent it is settled before: only a peer with
    the connection file's client key gets a message through (security.py)."""
    if not frames or len(frames[0]) > HEADER_FRAME_LIMIT:
        raise RequestError(protocol.BAD_REQUEST, "malformed message: expected [header, payload...]")
    untrusted = untrusted_id(frames[0].bytes if isinstance(frames[0], zmq.Frame) else frames[0])
    try:
        header, payload = protocol.unpack(frames)
    except (ValueError, TypeError, msgpack.UnpackException):
        raise RequestError(
            protocol.BAD_REQUEST, "the header is not a valid msgpack map", untrusted
        ) from None
    request_id = header.get("id")
    if header.get("v") != protocol.PROTOCOL_VERSION:
        raise RequestError(
            protocol.VERSION_MISMATCH,
            f"this daemon speaks protocol {protocol.PROTOCOL_VERSION}, the request "
            f"{header.get('v')!r}: update glcic and the plugin so they match",
            request_id,
        )
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
        raise RequestError(protocol.BAD_REQUEST, "the header needs an 'id' string", request_id)
    return header, payload


def untrusted_id(header: bytes) -> Any:
    """The request id of a message we refuse, so the client can match the refusal (best effort)."""
    try:
        decoded = msgpack.unpackb(
            header, raw=False, max_bin_len=0, max_str_len=256, max_array_len=16, max_map_len=32
        )
    except Exception:
        return None
    value = decoded.get("id") if isinstance(decoded, dict) else None
    return value if isinstance(value, str) and len(value) <= 128 else None


def validate_complete(
    header: dict[str, Any],
    payload: list[Any],
    models: ModelCatalog,
    *,
    identity: bytes = b"",
    max_side: int,
    timeout: float,
) -> Job:
    """A `complete` request as a job, checked completely: sizes against `max_side` and the
    payload, the blend mode, the model, the keepalive period. The job gets `timeout` seconds.

    The payload frames, joined, are the RGBA8 pixels then the 8-bit mask (cut anywhere, in
    frames of at most protocol.FRAME_LIMIT bytes). Joining them empties `payload`: each frame
    is dropped once copied, so the daemon holds a large image about once, not twice."""
    width, height = header.get("width"), header.get("height")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
        raise RequestError(protocol.BAD_REQUEST, "'width' and 'height' must be integers")
    if width < 1 or height < 1:
        raise RequestError(protocol.BAD_REQUEST, f"image size {width}x{height} is empty")
    if width > max_side or height > max_side:
        raise RequestError(
            protocol.TOO_LARGE,
            f"image {width}x{height} exceeds this daemon's limit of {max_side}x{max_side}",
        )
    pixel_bytes, size = width * height * 4, sum(len(frame) for frame in payload)
    if size != pixel_bytes + width * height:
        raise RequestError(
            protocol.BAD_REQUEST,
            f"'complete' takes {width}x{height} RGBA8 pixels then an 8-bit mask: "
            f"{pixel_bytes} + {width * height} bytes of payload, got {size}",
        )
    blend = header.get("blend", "poisson")
    if blend not in BLEND_MODES:
        raise RequestError(protocol.BAD_REQUEST, f"'blend' must be one of {', '.join(BLEND_MODES)}")
    model = header.get("model")
    if model is not None and (not isinstance(model, str) or not models.exists(model)):
        raise RequestError(
            protocol.UNKNOWN_MODEL, f"no model named {model!r} (see: glcic-daemon models)"
        )
    if model is None and models.default_name() is None:
        raise RequestError(
            protocol.NO_MODEL,
            f"no model is available: put a .safetensors model in {models.directory}",
        )
    keepalive = header.get("keepalive")
    if keepalive is not None and (
        not isinstance(keepalive, (int, float))
        or isinstance(keepalive, bool)
        or not KEEPALIVE_RANGE[0] <= keepalive <= KEEPALIVE_RANGE[1]
    ):
        raise RequestError(
            protocol.BAD_REQUEST,
            f"'keepalive' must be a number of seconds from {KEEPALIVE_RANGE[0]:g} to "
            f"{KEEPALIVE_RANGE[1]:g}",
        )
    data = _joined(payload, size)
    return Job(
        header["id"], identity, width, height, data[:pixel_bytes], data[pixel_bytes:], model,
        blend, timeout, keepalive=float(keepalive) if keepalive is not None else None,
    )  # fmt: skip


def _joined(payload: list[Any], size: int) -> np.ndarray:
    """The frames of `payload` as one buffer of `size` bytes; `payload` ends up empty."""
    data = np.empty(size, np.uint8)  # untouched pages: it grows as the frames shrink
    offset = 0
    payload.reverse()
    while payload:
        chunk = np.frombuffer(payload.pop(), np.uint8)
        data[offset : offset + chunk.size] = chunk
        offset += chunk.size
        del chunk  # the frame's last reference: ZeroMQ frees it now
    return data


def check_simple_request(op: Any, payload: Sequence[Any]) -> None:
    """Operations other than `complete` carry no payload frames."""
    if payload:
        raise RequestError(protocol.BAD_REQUEST, f"operation {op!r} takes no payload frames")
