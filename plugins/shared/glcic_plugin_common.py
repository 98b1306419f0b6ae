"""What the Krita and GIMP plugins share: geometry, byte-level pixel work, the daemon call on a
worker thread, and the words shown to the user.

`glcic-daemon install-plugin` copies this file, with the thin client (glcic_client.py), into each
plugin. It runs inside the host's own Python, which has no numpy: pixels are handled with
extended slice assignment, which moves a whole channel at C speed.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from typing import Any

try:  # inside a plugin package (Krita) the client sits beside this module
    from . import glcic_client as client_module
except ImportError:  # a plain folder on sys.path (GIMP)
    import glcic_client as client_module

#: The error code of a request for a model the daemon does not have (hosts add where to choose).
UNKNOWN_MODEL = client_module.UNKNOWN_MODEL

#: What the daemon's progress stages mean to the user.
PROGRESS_STAGES = {
    "queued": "Waiting for the glcic daemon…",
    "planning": "Planning the fill…",
    "network": "Completing…",
    "done": "Finishing…",
}

#: 0 stays 0, anything selected becomes 255: the daemon fills every selected pixel fully and the
#: selection's softness comes back as the new layer's alpha (blending twice would wash it out).
_SELECTED = bytes([0] + [255] * 255)


@dataclass(frozen=True)
class Rect:
    """A pixel rectangle in image coordinates."""

    x: int
    y: int
    width: int
    height: int

    @property
    def empty(self) -> bool:
        return self.width <= 0 or self.height <= 0

    @property
    def corners(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.x + self.width, self.y + self.height)

    @classmethod
    def from_corners(cls, x0: int, y0: int, x1: int, y1: int) -> Rect:
        return cls(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def intersected(self, other: Rect) -> Rect:
        x0, y0, x1, y1 = self.corners
        a0, b0, a1, b1 = other.corners
        return Rect.from_corners(max(x0, a0), max(y0, b0), min(x1, a1), min(y1, b1))

    def translated(self, dx: int, dy: int) -> Rect:
        return Rect(self.x + dx, self.y + dy, self.width, self.height)


def swap_red_blue(pixels: bytes) -> bytes:
    """BGRA <-> RGBA (the same swap both ways)."""
    out = bytearray(pixels)
    out[0::4] = pixels[2::4]
    out[2::4] = pixels[0::4]
    return bytes(out)


def hole_mask(selection: bytes) -> bytes:
    """The daemon's mask from Krita's 8-bit selection: every selected pixel is a hole."""
    return selection.translate(_SELECTED)


def fill_layer_pixels(rgba: bytes, alpha: bytes, order: str = "rgba") -> bytes:
    """The new layer's pixels, in `order` ("rgba" or Krita's "bgra"): the daemon's fill, with
    the selection as alpha. Pixels outside the selection become fully transparent black."""
    if len(rgba) != 4 * len(alpha):
        raise ValueError("fill and selection sizes differ")
    out = bytearray(len(rgba))
    keep = alpha.translate(_SELECTED)  # 255 where selected, 0 elsewhere
    sources = (2, 1, 0) if order == "bgra" else (0, 1, 2)
    for channel, source in enumerate(sources):
        # A byte AND with 0 or 255 clears or keeps it, for a whole channel at once.
        value = int.from_bytes(rgba[source::4], "little") & int.from_bytes(keep, "little")
        out[channel::4] = value.to_bytes(len(alpha), "little")
    out[3::4] = alpha
    return bytes(out)


def context_region(box: Rect, image: Rect, max_hole_side: int) -> Rect:
    """What to read from the layer for a selection inside `box`: the box plus the context the
    network looks at (see glcic_client.context_box), within the image."""
    x0, y0, x1, y1 = client_module.context_box(
        box.corners, (image.width, image.height), max_hole_side
    )
    return Rect.from_corners(x0, y0, x1, y1)


def region_mask(selection: bytes, box: Rect, region: Rect) -> bytes:
    """The daemon's hole mask for `region`, from the 8-bit selection read inside `box`."""
    mask = bytearray(region.width * region.height)
    selected = hole_mask(selection)
    dx, dy = box.x - region.x, box.y - region.y
    for row in range(box.height):
        start = (dy + row) * region.width + dx
        mask[start : start + box.width] = selected[row * box.width : (row + 1) * box.width]
    return bytes(mask)


def sub_rows(data: bytes, stride: int, rect: Rect, bytes_per_pixel: int = 1) -> bytes:
    """The bytes of `rect` (relative to the buffer's origin) from a row-major buffer whose rows
    are `stride` pixels wide."""
    row = stride * bytes_per_pixel
    start, length = rect.x * bytes_per_pixel, rect.width * bytes_per_pixel
    return b"".join(
        data[(rect.y + r) * row + start : (rect.y + r) * row + start + length]
        for r in range(rect.height)
    )


# -- the daemon call ------

#: How long a question to the daemon may take before we call it unresponsive (seconds).
REQUEST_TIMEOUT = 10.0
#: How long a completion may take, queueing included (the daemon has its own limit too).
COMPLETION_TIMEOUT = 900.0


def daemon_models(timeout: float = REQUEST_TIMEOUT) -> tuple[list[str], str | None]:
    """The names of the models the daemon can complete with, and its default's name (None when
    it has none), for a model chooser in a host.

    Blocks for up to `timeout` seconds, so a host calls it off its UI thread (or with a short
    timeout). A model whose file failed to load and that has no earlier version in service is
    left out: choosing it could only fail. Raises the client errors that describe_client_error()
    words (daemon not running, timeout, version mismatch, ...).
    """
    with client_module.Client(timeout=timeout) as client:
        entries = client.models()
    names: list[str] = []
    default: str | None = None
    for entry in entries:
        name = str(entry["name"])
        if entry.get("error") and not entry.get("loaded"):
            continue
        names.append(name)
        if entry.get("default"):
            default = name
    return names, default


@dataclass(frozen=True)
class Request:
    """What the UI thread read from the document for the daemon."""

    region: Rect
    rgba: bytes
    mask: bytes


class CompletionJob:
    """One completion, talking to the daemon on a worker thread so the host never waits on it.

    Krita's and GIMP's APIs may only be used from their UI (main) thread, and a daemon call can
    take seconds (or hang, if the daemon does). So the work is split: the worker thread owns the
    ZeroMQ client and does every blocking call; the UI thread reads and writes pixels. They meet
    through a queue of events that the UI thread polls with a timer. The exchange is:

        worker: ask the daemon which hole sizes its model handles  -> event ("need_pixels", limit)
        UI:     read the selection's box plus the context margin   -> job.provide(region, ...)
        worker: send it, relay progress                            -> ("progress", stage, fraction)
                                                                   -> ("result", CompletionResult)
                                                                   or ("error", message[, code])
    """

    def __init__(self, host: str, model: str | None = None) -> None:
        self.host = host  # "krita" or "gimp", for the advice in error messages
        self.model = model
        self.events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.cancelled = threading.Event()
        self._requests: queue.Queue[Request | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="glcic-completion", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def provide(self, request: Request | None) -> None:
        """Answer "need_pixels"; None gives up (e.g. the document was closed). Never blocks the
        host's UI thread: after a cancel the worker already holds its answer (None)."""
        with contextlib.suppress(queue.Full):
            self._requests.put_nowait(None if self.cancelled.is_set() else request)

    def cancel(self) -> None:
        self.cancelled.set()
        if self._requests.empty():
            with contextlib.suppress(queue.Full):
                self._requests.put_nowait(None)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            with client_module.Client(timeout=REQUEST_TIMEOUT) as client:
                limit = client.hole_size_limit(self.model)
                self.events.put(("need_pixels", limit))
                request = self._requests.get()
                if request is None or self.cancelled.is_set():
                    self.events.put(("cancelled",))
                    return
                result = client.complete(
                    request.region.width,
                    request.region.height,
                    request.rgba,
                    request.mask,
                    model=self.model,
                    progress=lambda stage, fraction: self.events.put(("progress", stage, fraction)),
                    cancel=self.cancelled,
                    timeout=COMPLETION_TIMEOUT,
                )
                self.events.put(("result", request, result))
        except client_module.DaemonError as error:
            if error.code == client_module.CANCELLED:
                self.events.put(("cancelled",))
            else:  # the code lets a host add its own advice (e.g. where to choose a model)
                self.events.put(("error", describe_daemon_error(error), error.code))
        except client_module.ClientError as error:
            self.events.put(("error", describe_client_error(error, self.host)))
        except Exception as error:  # a bug here must reach the user, not vanish with the thread
            self.events.put(("error", f"Unexpected problem: {type(error).__name__}: {error}"))


HOW_TO_START = (
    "Start it from a terminal with:\n\n    glcic-daemon start\n\n"
    "then run Content-aware complete again."
)


def describe_client_error(error: Exception, host: str) -> str:
    """Words a painter understands, with what to do next."""
    if isinstance(error, client_module.DaemonNotRunning):
        # The plain case says nothing the sentence above does not; other causes add a detail.
        detail = "" if str(error) == client_module.NOT_RUNNING else f"\n\n({error})"
        return f"The glcic completion daemon is not running.\n\n{HOW_TO_START}{detail}"
    if isinstance(error, client_module.DaemonTimeout):
        return (
            "The glcic daemon did not answer in time. It may be busy with a very large image "
            "or stuck; `glcic-daemon status` in a terminal shows what it is doing, and "
            f"`glcic-daemon stop` then `glcic-daemon start` restarts it.\n\n({error})"
        )
    if isinstance(error, client_module.ProtocolMismatch):
        return (
            "This plugin and the running glcic daemon are different versions. Update glcic, "
            f"reinstall the plugin with `glcic-daemon install-plugin {host}`, and restart the "
            f"daemon.\n\n({error})"
        )
    if isinstance(error, client_module.CurveUnavailable):
        return (
            f"The Python that {host.capitalize()} runs plugins with has a ZeroMQ without "
            "encryption, which the glcic daemon requires. Install your distribution's "
            "python3-zmq, or bundle a pyzmq that has it with the plugin: "
            f"`glcic-daemon install-plugin {host} --python X.Y` (X.Y: that Python's version)."
            f"\n\n({error})"
        )
    if isinstance(error, client_module.DaemonError):
        return describe_daemon_error(error)
    return f"The glcic daemon could not be reached: {error}"


def describe_daemon_error(error: client_module.DaemonError) -> str:
    advice = {
        client_module.BUSY: "The daemon is busy with other requests; try again in a moment.",
        client_module.TOO_LARGE: "The selected area is too large for the daemon's limits.",
        client_module.NO_MODEL: "The daemon has no completion model installed.",
        client_module.UNKNOWN_MODEL: (
            "The glcic daemon has no model by the name asked for: it may have been removed or "
            "renamed (`glcic-daemon models` in a terminal lists them)."
        ),
        client_module.TIMEOUT: "The completion took longer than the daemon allows.",
        client_module.SHUTTING_DOWN: "The daemon is shutting down. " + HOW_TO_START,
    }.get(error.code, "The glcic daemon could not complete the selection.")
    return f"{advice}\n\n({error})"
