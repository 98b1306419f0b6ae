"""The daemon's inference worker: one thread that runs validated jobs one at a time.

It never touches the server's ROUTER socket (ZeroMQ sockets are not thread-safe): every progress
event, result and error goes out through its own PUSH socket to the main thread, which forwards
it. It checks for cancellation, abandoned clients and timeouts between crops, and on CUDA
out-of-memory retries a job with smaller crops before giving up. Any failure of a job becomes an
`error` reply for that job; nothing a job does can stop the worker.

The loader thread (`Loader`) answers `reload` the same way, so loading a big model file never
holds up the main thread: `ping`, `status` and the clients' `alive` messages are read meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from typing import TYPE_CHECKING

import numpy as np
import torch
import zmq

from glcic.daemon import protocol
from glcic.daemon.model_manager import ModelNotFound
from glcic.daemon.validation import ABANDONED_MESSAGE, Job
from glcic.errors import CancelledError, InputError
from glcic.pipeline import (
    DEFAULT_MAX_WORKING_SIDE,
    CompletedRegion,
    CompletionStats,
    complete_region,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from glcic.daemon.server import Server
    from glcic.model_file import CompletionModel

log = logging.getLogger("glcic.daemon")

REPLIES_ADDRESS = "inproc://glcic-replies"
_SMALLEST_WORKING_SIDE = 384


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
            {"v": protocol.PROTOCOL_VERSION, "id": job.request_id, **header}, payload
        )
        socket.send_multipart([job.identity, *frames], copy=False)

    def _run(self, job: Job, socket: zmq.Socket) -> None:
        started = time.monotonic()
        job.deadline = started + job.timeout

        def progress(stage: str, fraction: float) -> None:
            self._send(socket, job, {"type": "progress", "stage": stage, "fraction": fraction})

        def should_stop() -> bool:
            if self.server.client_gone(job):
                job.cancel.set()
            return job.cancel.is_set() or time.monotonic() > job.deadline

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
            elif self.server.client_gone(job):
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

    def _complete_with_retry(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        model: CompletionModel,
        job: Job,
        progress: Callable[[str, float], None],
        should_stop: Callable[[], bool],
        stats: CompletionStats,
    ) -> CompletedRegion:
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


class Loader(threading.Thread):
    """Answers `reload` requests: rescans the model folder off the main thread.

    Requests that arrive while a scan runs are answered together by the next one (which sees
    whatever changed meanwhile); replies go out through this thread's own PUSH socket, like the
    worker's. A failed load is not a failed reload: it shows in the reply's `errors`, and the
    version loaded before stays in service.
    """

    def __init__(self, server: Server) -> None:
        super().__init__(name="glcic-loader", daemon=True)
        self.server = server
        self.waiting: list[tuple[bytes, str]] = []
        self.wake = threading.Condition()

    def request(self, identity: bytes, request_id: str) -> None:
        with self.wake:
            self.waiting.append((identity, request_id))
            self.wake.notify()

    def stop(self) -> None:
        with self.wake:
            self.wake.notify()

    def run(self) -> None:
        socket = self.server.context.socket(zmq.PUSH)
        socket.connect(REPLIES_ADDRESS)
        try:
            while True:
                with self.wake:
                    while not self.waiting and not self.server.stopping.is_set():
                        self.wake.wait(1.0)
                    batch, self.waiting = self.waiting, []
                if self.server.stopping.is_set():
                    answer = {"type": "error", "code": protocol.SHUTTING_DOWN,
                              "message": "the daemon is shutting down"}  # fmt: skip
                    self._answer(socket, batch, answer)
                    return
                self._answer(socket, batch, self._reload())
        finally:
            socket.close(linger=1000)

    def _reload(self) -> dict:
        manager = self.server.manager
        try:
            manager.scan()
            return {"type": "reply", "models": manager.describe(), "errors": manager.errors()}
        except Exception as error:  # e.g. the model folder unreadable: an answer, not a crash
            log.error("reloading the models failed:\n%s", traceback.format_exc())
            return {"type": "error", "code": protocol.INTERNAL,
                    "message": f"internal error: {type(error).__name__}: {error}"}  # fmt: skip

    def _answer(self, socket: zmq.Socket, batch: list[tuple[bytes, str]], fields: dict) -> None:
        for identity, request_id in batch:
            frames = protocol.pack({"v": protocol.PROTOCOL_VERSION, "id": request_id, **fields})
            socket.send_multipart([identity, *frames])
