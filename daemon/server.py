"""The glcic daemon: a ZeroMQ ROUTER on loopback in front of one inference worker per device.

The main thread owns the socket (ZeroMQ sockets are not thread-safe): it checks signatures,
answers quick operations itself, validates `complete` requests completely before queueing them,
and forwards what the worker sends back over an inproc socket. The worker runs jobs one at a
time from a bounded FIFO queue; it checks for cancellation and timeouts between crops. Nothing a
client sends can stop the loop: every failure inside a request becomes an `error` reply.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import torch
import zmq

from glcic import __version__
from glcic.daemon import client as protocol
from glcic.daemon.connection import (
    DaemonLock,
    new_key,
    remove_connection_file,
    write_connection_file,
)
from glcic.daemon.models import ModelManager, ModelNotFound
from glcic.errors import CancelledError, InputError
from glcic.paths import models_dir
from glcic.pipeline import (
    BLEND_MODES,
    DEFAULT_MAX_WORKING_SIDE,
    CompletionStats,
    complete_region,
)
from glcic.precision import resolve_precision

log = logging.getLogger("glcic.daemon")

REPLIES_ADDRESS = "inproc://glcic-replies"
#: A job is dropped once its client has missed this many `alive` periods.
ABANDON_AFTER = 3
KEEPALIVE_RANGE = (0.1, 60.0)
ABANDONED_MESSAGE = "cancelled: the client stopped sending 'alive'"
_HEADER_FRAME_LIMIT = 64 * 1024
_SMALLEST_WORKING_SIDE = 384


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 0  # 0: chosen by the OS
    device: str = "auto"
    precision: str = "auto"
    default_model: str | None = None
    max_queue: int = 8
    request_timeout: float = 300.0
    max_side: int = 16384

    @property
    def max_frame_bytes(self) -> int:
        return self.max_side * self.max_side * 4 + _HEADER_FRAME_LIMIT


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {name}: no CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"--device {name}: Apple's MPS is not available")
    return device


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

    def abandoned(self, now: float) -> bool:
        """Whether a client that promised `alive` messages has missed several: it is gone
        (a host killed its plug-in, or crashed), so nobody is waiting for this result."""
        return self.keepalive is not None and now - self.last_seen > ABANDON_AFTER * self.keepalive


class RequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Worker(threading.Thread):
    """Runs jobs one at a time; talks to the main thread only through its own PUSH socket."""

    def __init__(self, server: Server) -> None:
        super().__init__(name="glcic-worker", daemon=True)
        self.server = server
        self.running: Job | None = None

    def run(self) -> None:
        socket = self.server.context.socket(zmq.PUSH)
        socket.connect(REPLIES_ADDRESS)
        try:
            while True:
                job = self.server.next_job(timeout=2.0)
                if job is None:
                    if self.server.stopping.is_set():
                        return
                    self._rescan()
                    continue
                try:
                    self._run(job, socket)
                finally:
                    self.running = None
                    self.server.requests_served += 1
        finally:
            socket.close(linger=1000)

    def _rescan(self) -> None:
        try:
            self.server.manager.scan()
        except Exception:  # never let a directory glitch stop the worker
            log.exception("scanning the model directory failed")

    def _send(self, socket: zmq.Socket, job: Job, header: dict, payload: list = ()) -> None:
        frames = protocol.pack(
            self.server.key,
            {"v": protocol.PROTOCOL_VERSION, "id": job.request_id, **header},
            payload,
        )
        socket.send_multipart([job.identity, *frames], copy=False)

    def _run(self, job: Job, socket: zmq.Socket) -> None:
        started = time.monotonic()
        job.deadline = started + job.timeout

        def progress(stage: str, fraction: float) -> None:
            self._send(socket, job, {"type": "progress", "stage": stage, "fraction": fraction})

        def should_stop() -> bool:
            now = time.monotonic()
            if job.abandoned(now):
                job.cancel.set()
            return job.cancel.is_set() or now > job.deadline

        try:
            name, model = self.server.manager.get(job.model)
            image = np.frombuffer(job.pixels, np.uint8).reshape(job.height, job.width, 4)
            mask = np.frombuffer(job.mask, np.uint8).reshape(job.height, job.width)
            stats = CompletionStats()
            region = self._complete_with_retry(
                image, mask, model, job, progress, should_stop, stats
            )
            x, y, changed = region.x, region.y, np.ascontiguousarray(region.pixels)
            h, w = changed.shape[:2]
            header = {
                "type": "result", "x": x, "y": y, "width": w, "height": h, "model": name,
                "seconds": round(time.monotonic() - started, 4),
            }  # fmt: skip
            self._send(socket, job, header, [memoryview(changed).cast("B")])
            log.info(
                "completed %s: %dx%d, model %s, %.3f s (network %.3f s, blending %.3f s)",
                job.request_id, job.width, job.height, name, time.monotonic() - started,
                stats.network_seconds, stats.blend_seconds,
            )  # fmt: skip
        except CancelledError:
            timed_out = time.monotonic() > job.deadline and not job.cancel.is_set()
            code = protocol.TIMEOUT if timed_out else protocol.CANCELLED
            if timed_out:
                message = f"the request took longer than {self.server.settings.request_timeout:g} s"
            elif job.abandoned(time.monotonic()):
                message = ABANDONED_MESSAGE
                log.info("dropped %s: its client is gone", job.request_id)
            else:
                message = "cancelled"
            self._error(socket, job, code, message)
        except ModelNotFound as error:
            self._error(
                socket, job, protocol.UNKNOWN_MODEL if job.model else protocol.NO_MODEL, str(error)
            )
        except InputError as error:
            self._error(socket, job, protocol.BAD_INPUT, str(error))
        except Exception as error:  # one broken request must not stop the daemon
            log.error("request %s failed:\n%s", job.request_id, traceback.format_exc())
            self._error(
                socket, job, protocol.INTERNAL, f"internal error: {type(error).__name__}: {error}"
            )

    def _complete_with_retry(self, image, mask, model, job, progress, should_stop, stats):
        """On CUDA out-of-memory, retry with crops half the size before giving up."""
        side = DEFAULT_MAX_WORKING_SIDE
        while True:
            try:
                return complete_region(
                    image, mask, model, blend=job.blend, max_working_side=side,
                    progress=progress, should_cancel=should_stop, stats=stats,
                )  # fmt: skip
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                if side // 2 < _SMALLEST_WORKING_SIDE:
                    raise
                side //= 2
                log.warning(
                    "CUDA out of memory; retrying %s with crops up to %d px", job.request_id, side
                )

    def _error(self, socket: zmq.Socket, job: Job, code: str, message: str) -> None:
        self._send(socket, job, {"type": "error", "code": code, "message": message})


class Server:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        self.precision = resolve_precision(settings.precision, self.device, "completion")
        self.manager = ModelManager(
            models_dir(), self.device, settings.default_model, settings.precision
        )
        self.key = new_key()
        self.context = zmq.Context()
        self.queue: collections.deque[Job] = collections.deque()
        self.queue_ready = threading.Condition()
        self.stopping = threading.Event()
        self.requests_served = 0
        self.started = time.time()
        self.address = ""
        self.worker = Worker(self)

    # -- the queue (shared with the worker) --

    def next_job(self, timeout: float) -> Job | None:
        """The next job, marked as running in the same step, so a cancel always finds it."""
        with self.queue_ready:
            if not self.queue and not self.stopping.is_set():
                self.queue_ready.wait(timeout)
            job = self.queue.popleft() if self.queue else None
            self.worker.running = job
            return job

    def _drop_abandoned(self, router: zmq.Socket) -> None:
        """Answer and drop queued jobs whose clients are gone, so the living do not wait."""
        now = time.monotonic()
        with self.queue_ready:
            gone = [job for job in self.queue if job.abandoned(now)]
            for job in gone:
                self.queue.remove(job)
        for job in gone:
            log.info("dropped queued %s: its client is gone", job.request_id)
            self._reply(
                router,
                job.identity,
                job.request_id,
                error=(protocol.CANCELLED, ABANDONED_MESSAGE),
            )

    def _enqueue(self, job: Job) -> int:
        with self.queue_ready:
            if len(self.queue) >= self.settings.max_queue:
                raise RequestError(
                    protocol.BUSY,
                    f"the daemon is busy ({len(self.queue)} requests waiting); try again shortly",
                )
            self.queue.append(job)
            self.queue_ready.notify()
            return len(self.queue)

    # -- main loop --

    def run(self) -> int:
        lock = DaemonLock()
        lock.acquire()
        router = self.context.socket(zmq.ROUTER)
        router.setsockopt(zmq.MAXMSGSIZE, self.settings.max_frame_bytes)
        host = self.settings.host
        if ":" in host:  # an IPv6 address
            router.setsockopt(zmq.IPV6, 1)
            host = f"[{host}]"
        router.setsockopt(zmq.LINGER, 1000)
        replies = self.context.socket(zmq.PULL)
        replies.bind(REPLIES_ADDRESS)
        try:
            if self.settings.port:
                router.bind(f"tcp://{host}:{self.settings.port}")
                port = self.settings.port
            else:
                port = router.bind_to_random_port(f"tcp://{host}")
            self.address = f"tcp://{host}:{port}"
            self.manager.scan()
            self.worker.start()
            # Clients on this machine connect over loopback even when listening on all interfaces.
            wildcard = self.settings.host in ("0.0.0.0", "::", "*")
            write_connection_file("127.0.0.1" if wildcard else self.settings.host, port, self.key)
            self._install_signal_handlers()
            log.info("glcic daemon %s listening on %s, device %s, precision %s, default model %s",
                     __version__, self.address, self.device, self.precision.describe(),
                     self.manager.default_name())  # fmt: skip
            self._loop(router, replies)
        finally:
            self._shutdown(router, replies)
            remove_connection_file()
            lock.release()
            log.info("daemon stopped")
        return 0

    def _install_signal_handlers(self) -> None:
        def stop(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            self.stopping.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

    def _loop(self, router: zmq.Socket, replies: zmq.Socket) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(replies, zmq.POLLIN)
        while not self.stopping.is_set():
            events = dict(poller.poll(200))
            if replies in events:
                while replies.poll(0):
                    router.send_multipart(replies.recv_multipart(copy=False), copy=False)
            if router in events:
                for _ in range(64):  # stay responsive to replies under a flood
                    if not router.poll(0):
                        break
                    self._handle(router, router.recv_multipart(copy=False))
            self._drop_abandoned(router)

    def _shutdown(self, router: zmq.Socket, replies: zmq.Socket) -> None:
        """Cancel the running job, answer everyone waiting, and stop the worker."""
        self.stopping.set()
        with self.queue_ready:
            waiting = list(self.queue)
            self.queue.clear()
            self.queue_ready.notify_all()
        for job in waiting:
            self._reply(
                router,
                job.identity,
                job.request_id,
                error=(protocol.SHUTTING_DOWN, "the daemon is shutting down"),
            )
        running = self.worker.running
        if running is not None:
            running.cancel.set()
        if self.worker.is_alive():
            self.worker.join(timeout=30)
        while replies.poll(100):
            router.send_multipart(replies.recv_multipart(copy=False), copy=False)
        replies.close(linger=0)
        router.close(linger=1000)
        if self.worker.is_alive():  # stuck in one long batch: do not wait for it
            log.warning("the running job did not stop in time; exiting without it")
            self.context.destroy(linger=0)
        else:
            self.context.term()

    # -- one message --

    def _reply(
        self,
        router,
        identity: bytes,
        request_id: Any,
        error: tuple[str, str] | None = None,
        **fields: Any,
    ) -> None:
        header: dict[str, Any] = {"v": protocol.PROTOCOL_VERSION, "id": request_id}
        if error is not None:
            header.update(type="error", code=error[0], message=error[1])
        else:
            header.update(type="reply", **fields)
        router.send_multipart([identity, *protocol.pack(self.key, header)])

    def _handle(self, router: zmq.Socket, frames: list[zmq.Frame]) -> None:
        identity = frames[0].bytes
        request_id = None
        try:
            if len(frames) < 3 or len(frames[2]) > _HEADER_FRAME_LIMIT:
                raise RequestError(
                    protocol.BAD_REQUEST,
                    "malformed message: expected [signature, header, payload...]",
                )
            request_id = _untrusted_id(frames[2].bytes)
            try:
                header, payload = protocol.unpack(self.key, frames[1:])
            except PermissionError:
                raise RequestError(
                    protocol.UNAUTHORIZED,
                    "missing or wrong signature: use the key in the daemon's connection file",
                ) from None
            except (ValueError, TypeError, msgpack.UnpackException):
                raise RequestError(
                    protocol.BAD_REQUEST, "the header is not a valid msgpack map"
                ) from None
            request_id = header.get("id")
            if header.get("v") != protocol.PROTOCOL_VERSION:
                raise RequestError(
                    protocol.VERSION_MISMATCH,
                    f"this daemon speaks protocol {protocol.PROTOCOL_VERSION}, the request "
                    f"{header.get('v')!r}: update glcic and the plugin so they match",
                )
            if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
                raise RequestError(protocol.BAD_REQUEST, "the header needs an 'id' string")
            self._dispatch(router, identity, header, payload)
        except RequestError as error:
            self._reply(
                router,
                identity,
                request_id if isinstance(request_id, (str, int)) else None,
                error=(error.code, str(error)),
            )
        except Exception as error:  # defensive: the loop must survive anything
            log.error("bad message from a client:\n%s", traceback.format_exc())
            self._reply(
                router,
                identity,
                None,
                error=(protocol.INTERNAL, f"internal error: {type(error).__name__}"),
            )

    def _dispatch(self, router, identity: bytes, header: dict, payload: list) -> None:
        op, request_id = header.get("op"), header["id"]
        if op == "complete":
            job = self._validate_complete(identity, header, payload)
            position = self._enqueue(job)
            router.send_multipart(
                [
                    identity,
                    *protocol.pack(
                        self.key,
                        {
                            "v": protocol.PROTOCOL_VERSION,
                            "id": request_id,
                            "type": "progress",
                            "stage": "queued",
                            "fraction": 0.0,
                            "position": position,
                        },
                    ),
                ]
            )
            return
        if payload:
            raise RequestError(protocol.BAD_REQUEST, f"operation {op!r} takes no payload frames")
        if op == "alive":  # no reply: it only keeps the client's jobs from being dropped
            self._alive(identity, header.get("target"))
            return
        if op == "ping":
            self._reply(
                router,
                identity,
                request_id,
                pong=True,
                pid=os.getpid(),
                protocol=protocol.PROTOCOL_VERSION,
            )
        elif op == "status":
            self._reply(router, identity, request_id, **self.status())
        elif op == "models":
            self._reply(router, identity, request_id, models=self.manager.describe())
        elif op == "reload":
            self.manager.scan()
            self._reply(
                router,
                identity,
                request_id,
                models=self.manager.describe(),
                errors=self.manager.errors(),
            )
        elif op == "cancel":
            self._reply(router, identity, request_id, **self._cancel(router, header.get("target")))
        elif op == "shutdown":
            self._reply(router, identity, request_id, stopping=True)
            self.stopping.set()
        else:
            raise RequestError(protocol.BAD_REQUEST, f"unknown operation {op!r}")

    def _validate_complete(self, identity: bytes, header: dict, payload: list) -> Job:
        width, height = header.get("width"), header.get("height")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (width, height)):
            raise RequestError(protocol.BAD_REQUEST, "'width' and 'height' must be integers")
        if width < 1 or height < 1:
            raise RequestError(protocol.BAD_REQUEST, f"image size {width}x{height} is empty")
        limit = self.settings.max_side
        if width > limit or height > limit:
            raise RequestError(
                protocol.TOO_LARGE,
                f"image {width}x{height} exceeds this daemon's limit of {limit}x{limit}",
            )
        if len(payload) != 2:
            raise RequestError(
                protocol.BAD_REQUEST,
                f"'complete' takes 2 payload frames (RGBA8 pixels, 8-bit mask), got {len(payload)}",
            )
        pixels, mask = payload
        if len(pixels) != width * height * 4:
            raise RequestError(
                protocol.BAD_REQUEST,
                f"pixel frame has {len(pixels)} bytes; {width}x{height} RGBA8 needs "
                f"{width * height * 4}",
            )
        if len(mask) != width * height:
            raise RequestError(
                protocol.BAD_REQUEST,
                f"mask frame has {len(mask)} bytes; {width}x{height} 8-bit needs {width * height}",
            )
        blend = header.get("blend", "poisson")
        if blend not in BLEND_MODES:
            raise RequestError(
                protocol.BAD_REQUEST, f"'blend' must be one of {', '.join(BLEND_MODES)}"
            )
        model = header.get("model")
        if model is not None and (not isinstance(model, str) or not self.manager.exists(model)):
            raise RequestError(
                protocol.UNKNOWN_MODEL, f"no model named {model!r} (see: glcic-daemon models)"
            )
        if model is None and self.manager.default_name() is None:
            raise RequestError(
                protocol.NO_MODEL,
                f"no model is available: put a .safetensors model in {self.manager.directory}",
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
        return Job(
            header["id"],
            identity,
            width,
            height,
            pixels,
            mask,
            model,
            blend,
            self.settings.request_timeout,
            keepalive=float(keepalive) if keepalive is not None else None,
        )

    def _alive(self, identity: bytes, target: Any) -> None:
        now = time.monotonic()
        with self.queue_ready:
            jobs = [*self.queue, self.worker.running]
        for job in jobs:
            if job is not None and job.request_id == target and job.identity == identity:
                job.last_seen = now

    def _cancel(self, router, target: Any) -> dict[str, Any]:
        with self.queue_ready:
            for job in list(self.queue):
                if job.request_id == target:
                    self.queue.remove(job)
                    self._reply(
                        router,
                        job.identity,
                        job.request_id,
                        error=(protocol.CANCELLED, "cancelled before it started"),
                    )
                    return {"cancelled": True, "state": "queued"}
        running = self.worker.running
        if running is not None and running.request_id == target:
            running.cancel.set()
            return {"cancelled": True, "state": "running"}
        raise RequestError(protocol.NOT_FOUND, f"no queued or running request {target!r}")

    def status(self) -> dict[str, Any]:
        running = self.worker.running
        return {
            "pid": os.getpid(),
            "version": __version__,
            "protocol": protocol.PROTOCOL_VERSION,
            "address": self.address,
            "device": str(self.device),
            "precision": self.precision.describe(),
            "default_model": self.manager.default_name(),
            "loaded_models": [m["name"] for m in self.manager.describe() if m["loaded"]],
            "model_errors": self.manager.errors(),
            "queue_length": len(self.queue),
            "running": running.request_id if running else None,
            "requests_served": self.requests_served,
            "uptime_s": round(time.time() - self.started, 1),
            "max_side": self.settings.max_side,
            "threads": torch.get_num_threads(),
        }


def _untrusted_id(header: bytes) -> Any:
    """The request id of a message we refuse, so the client can match the refusal (best effort)."""
    try:
        decoded = msgpack.unpackb(
            header, raw=False, max_bin_len=0, max_str_len=256, max_array_len=16, max_map_len=32
        )
    except Exception:
        return None
    value = decoded.get("id") if isinstance(decoded, dict) else None
    return value if isinstance(value, str) and len(value) <= 128 else None
