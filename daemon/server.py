"""The glcic daemon: a ZeroMQ ROUTER on loopback in front of one inference worker per device.

The main thread owns the socket (ZeroMQ sockets are not thread-safe): it checks each message and
each `complete` request completely before queueing it (the rules are in validation.py), answers
quick operations itself (status, models, cancel...), and forwards what the worker (worker.py)
sends back over an inproc socket. The worker runs jobs one at a time from a bounded FIFO queue.
Model files are never loaded on the main thread: the worker loads what a job needs, and the
loader thread answers `reload`, so `ping` and `status` answer while a big file loads.
Nothing a client sends can stop the loop: every failure inside a request becomes an `error` reply.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

import torch
import zmq

from glcic import __version__
from glcic.daemon import protocol
from glcic.daemon.connection import (
    DaemonLock,
    remove_connection_file,
    write_connection_file,
)
from glcic.daemon.model_manager import ModelManager
from glcic.daemon.security import Gatekeeper, Keys
from glcic.daemon.validation import (
    ABANDONED_MESSAGE,
    Job,
    RequestError,
    check_simple_request,
    read_message,
    validate_complete,
)
from glcic.daemon.worker import REPLIES_ADDRESS, Loader, Worker
from glcic.devices import resolve_device
from glcic.paths import models_dir
from glcic.precision import resolve_precision
from glcic.threads import set_threads

log = logging.getLogger("glcic.daemon")


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
    threads: int | None = None  # CPU threads for the network; None: glcic.threads' default


class Server:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.device = resolve_device(settings.device)
        set_threads(settings.threads)  # process-wide: the worker thread runs with it too
        self.precision = resolve_precision(settings.precision, self.device, "completion")
        self.manager = ModelManager(
            models_dir(), self.device, settings.default_model, settings.precision
        )
        self.keys = Keys.generate()  # refuses a pyzmq without CURVE
        self.context = zmq.Context()
        self.gatekeeper = Gatekeeper(self.context, self.keys)
        self.queue: collections.deque[Job] = collections.deque()
        self.queue_ready = threading.Condition()
        self.stopping = threading.Event()
        self.requests_served = 0
        self.started = time.time()
        self.address = ""
        #: Up to when the main loop has read every message that arrived: a client's `alive`
        #: messages are judged missing against this, never against time the loop was busy.
        self.messages_read_at = time.monotonic()
        self.worker = Worker(self)
        self.loader = Loader(self)

    # -- the queue (shared with the worker) --

    def next_job(self, timeout: float) -> Job | None:
        """The next job, marked as running in the same step, so a cancel always finds it."""
        with self.queue_ready:
            if not self.queue and not self.stopping.is_set():
                self.queue_ready.wait(timeout)
            job = self.queue.popleft() if self.queue else None
            self.worker.running = job
            return job

    def client_gone(self, job: Job) -> bool:
        """Whether `job`'s client stopped sending `alive` (see Job.abandoned)."""
        return job.abandoned(self.messages_read_at)

    def _drop_abandoned(self, router: zmq.Socket) -> None:
        """Answer and drop queued jobs whose clients are gone, so the living do not wait."""
        with self.queue_ready:
            gone = [job for job in self.queue if self.client_gone(job)]
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
        self.gatekeeper.start()
        router = self.context.socket(zmq.ROUTER)
        self.gatekeeper.secure(router)  # CURVE, this run's client key only, bounded frames
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
            self.manager.scan()  # before anyone can connect: nothing waits on it
            self.manager.check_configured_default()  # `start --model nosuch` must not start
            self.worker.start()
            self.loader.start()
            # Clients on this machine connect over loopback even when listening on all interfaces.
            wildcard = self.settings.host in ("0.0.0.0", "::", "*")
            local = "127.0.0.1" if wildcard else self.settings.host
            write_connection_file(local, port, self.keys.connection_fields())
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
            checked = time.monotonic()
            if not router.poll(0):  # everything that arrived before `checked` has been read
                self.messages_read_at = checked
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
        self.loader.stop()
        if self.worker.is_alive():
            self.worker.join(timeout=30)
        if self.loader.is_alive():
            self.loader.join(timeout=5)  # a file still loading is not waited for
        while replies.poll(100):
            router.send_multipart(replies.recv_multipart(copy=False), copy=False)
        replies.close(linger=0)
        router.close(linger=1000)
        self.gatekeeper.stop()
        if self.worker.is_alive() or self.loader.is_alive():  # stuck: do not wait for it
            log.warning("the running job or model load did not stop in time; exiting without it")
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
        router.send_multipart([identity, *protocol.pack(header)])

    def _handle(self, router: zmq.Socket, frames: list[zmq.Frame]) -> None:
        identity = frames[0].bytes
        request_id = None
        try:
            header, payload = read_message(frames[1:])
            del frames[:]  # `payload` alone holds the frames: validation frees each once copied
            request_id = header["id"]
            self._dispatch(router, identity, header, payload)
        except RequestError as error:
            if request_id is None:  # refused before the header was trusted
                request_id = error.request_id
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
            job = validate_complete(
                header, payload, self.manager, identity=identity,
                max_side=self.settings.max_side, timeout=self.settings.request_timeout,
            )  # fmt: skip
            position = self._enqueue(job)
            router.send_multipart(
                [
                    identity,
                    *protocol.pack(
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
        check_simple_request(op, payload)
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
        elif op == "reload":  # answered by the loader thread once the folder is rescanned
            self.loader.request(identity, request_id)
        elif op == "cancel":
            self._reply(router, identity, request_id, **self._cancel(router, header.get("target")))
        elif op == "shutdown":
            self._reply(router, identity, request_id, stopping=True)
            self.stopping.set()
        else:
            raise RequestError(protocol.BAD_REQUEST, f"unknown operation {op!r}")

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
