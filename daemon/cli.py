"""`glcic-daemon`: start, stop and query the local completion daemon, or complete through it.

glcic-daemon start [--foreground] [--device auto|cpu|cuda[:N]|mps] [--port N] [--model NAME]
                   [--threads N]
glcic-daemon stop | status | models
glcic-daemon complete IMAGE MASK OUT [--model NAME]

A model is named as everywhere in glcic (`glcic.model_names`): a name in the model folder,
`default`, or the path of a file in that folder. `models` lists the folder when no daemon runs.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from glcic.cli_support import (
    add_device_option,
    add_precision_option,
    add_threads_option,
    run_command,
)
from glcic.daemon.connection import (
    AlreadyRunning,
    DaemonLock,
    connection_file_path,
    remove_connection_file,
)
from glcic.daemon.files import (
    NO_ROOM,
    PrivateLogFile,
    keep_stderr_bounded,
    open_private,
    private_log_dir,
    write_failed,
)
from glcic.daemon.protocol import (
    NOT_RUNNING,
    Client,
    ClientError,
    DaemonNotRunning,
    UnsafeRuntimeDir,
)
from glcic.errors import GlcicError
from glcic.model_names import available_models, daemon_model_name, describe_available
from glcic.paths import log_dir, models_dir

PROG = "glcic-daemon"
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0
LOG_FILE = "daemon.log"
STDERR_FILE = "daemon.stderr"
#: Set by `start` for the detached daemon it spawns: a pipe on which the daemon, if it cannot
#: start, writes why in one line (its log files may be unwritable: a full disk).
REASON_FD_VARIABLE = "GLCIC_DAEMON_REASON_FD"
USER_ERRORS = (GlcicError, ClientError, ValueError)


def _setup_logging(foreground: bool) -> None:
    """daemon.log (rotated, private); with `foreground`, stderr too. A detached daemon logs
    to the file only: its stderr file keeps just what escapes logging, so it stays small."""
    logger = logging.getLogger("glcic.daemon")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    path = private_log_dir() / LOG_FILE
    try:
        handler = PrivateLogFile(path, maxBytes=5_000_000, backupCount=3, encoding="utf-8")
    except OSError as error:
        raise write_failed(error, path) from None
    handler.setFormatter(formatter)
    logger.addHandler(handler)
    if foreground:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(formatter)
        logger.addHandler(stream)


def _running_client(timeout: float = 5.0) -> Client | None:
    """A client of the running daemon, or None if none answers."""
    try:
        client = Client(timeout=timeout)
        client.ping()
        return client
    except UnsafeRuntimeDir:
        raise  # not "not running": the user must fix the folder first
    except ClientError:
        return None


def _require_running() -> Client:
    client = _running_client()
    if client is None:
        raise DaemonNotRunning(NOT_RUNNING)
    return client


def _describe(status: dict) -> str:
    return (
        f"glcic daemon running (pid {status['pid']}) at {status['address']}, "
        f"device {status['device']}, precision {status['precision']}, "
        f"{status.get('threads', '?')} CPU threads, "
        f"default model {status['default_model'] or 'none'}"
    )


def _check_start_options(args: argparse.Namespace) -> None:
    """Refuse what the daemon would refuse, here, before it starts: a mistake is one line and a
    non-zero status even when the daemon would have been detached."""
    from glcic.devices import resolve_device

    resolve_device(args.device)
    if args.model is not None:
        args.model = daemon_model_name(args.model)
        # The daemon serves this same folder: the name must be there now.
        if args.model not in {model.name for model in available_models()}:
            raise GlcicError(f"--model {args.model}: no such model; {describe_available()}")


def _start(args: argparse.Namespace) -> int:
    _check_start_options(args)
    host = args.listen
    if not ipaddress.ip_address(host).is_loopback:
        print(
            f"{PROG}: warning: listening on {host}: other machines can reach the daemon "
            "(requests still need the secret key)",
            file=sys.stderr,
        )
    running = _running_client()
    if running is not None:
        print("already running: " + _describe(running.status()))
        return 0
    if DaemonLock.is_held():
        raise GlcicError(
            "a glcic daemon process holds the lock but does not answer; "
            "stop it (glcic-daemon stop) or end that process"
        )
    remove_connection_file()  # stale: left by a daemon that was killed
    if args.foreground:
        return _serve(args)
    return _spawn(args)


def _serve(args: argparse.Namespace) -> int:
    from glcic.daemon.server import Server, ServerSettings

    _setup_logging(foreground=not args.detached)
    if args.detached:
        keep_stderr_bounded()
    settings = ServerSettings(
        host=args.listen, port=args.port, device=args.device, precision=args.precision,
        default_model=args.model, threads=args.threads,
        max_queue=args.max_queue, request_timeout=args.timeout, max_side=args.max_side,
    )  # fmt: skip
    try:
        return Server(settings).run()
    except AlreadyRunning as error:
        raise GlcicError(str(error)) from None
    except OSError as error:
        if error.errno in NO_ROOM:  # one line naming the full disk, not a traceback
            raise write_failed(error) from None
        raise


def _spawn(args: argparse.Namespace) -> int:
    """Start a detached daemon and return once it answers."""
    command = [sys.executable, "-m", "glcic.daemon.cli", "start", "--foreground", "--detached",
               "--device", args.device, "--precision", args.precision,
               "--port", str(args.port), "--listen", args.listen,
               "--max-queue", str(args.max_queue), "--timeout", str(args.timeout),
               "--max-side", str(args.max_side)]  # fmt: skip
    if args.model:
        command += ["--model", args.model]
    if args.threads is not None:
        command += ["--threads", str(args.threads)]
    folder = private_log_dir()
    # The daemon outlives this command: its stderr goes to a file, not a pipe that would close.
    stderr_path = folder / STDERR_FILE
    try:
        stderr = open_private(stderr_path)
    except OSError as error:
        raise write_failed(error, stderr_path) from None
    options: dict = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": stderr}
    reasons = None
    if os.name == "nt":  # pragma: no cover
        options["creationflags"] = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        options["start_new_session"] = True
        reasons, child_end = os.pipe()
        options["pass_fds"] = (child_end,)
        options["env"] = {**os.environ, REASON_FD_VARIABLE: str(child_end)}
    try:
        process = subprocess.Popen(command, **options)
    finally:
        stderr.close()
        if reasons is not None:
            os.close(child_end)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                reason = _start_failure(reasons, stderr_path)
                raise GlcicError(f"the daemon did not start: {reason or f'see {folder}'}")
            client = _running_client(timeout=2.0)
            if client is not None:
                print("started: " + _describe(client.status()))
                return 0
            time.sleep(0.2)
    finally:
        if reasons is not None:
            os.close(reasons)
    process.kill()
    raise GlcicError(f"the daemon did not answer within {START_TIMEOUT_S:g} s; see {log_dir()}")


def _start_failure(reasons: int | None, stderr_path: Path) -> str:
    """Why the spawned daemon stopped: the line it sent down the pipe, else its stderr's last."""
    lines: list[str] = []
    if reasons is not None:
        os.set_blocking(reasons, False)  # whatever it wrote is there: it has exited
        data = b""
        with contextlib.suppress(OSError):
            while chunk := os.read(reasons, 65536):
                data += chunk
        lines = data.decode(errors="replace").strip().splitlines()
    if not lines:
        with contextlib.suppress(OSError):
            lines = stderr_path.read_text(errors="replace").strip().splitlines()
    return lines[-1].removeprefix(f"{PROG}: error: ") if lines else ""


def _telling_parent(handler: Callable[[], int]) -> Callable[[], int]:
    """In a daemon spawned by `start`: send the parent, down its pipe, the one line saying why
    this process could not start (a message on stderr can be lost with a full disk)."""
    value = os.environ.pop(REASON_FD_VARIABLE, "")
    try:
        fd = int(value)
        os.set_inheritable(fd, False)  # nothing this process starts keeps the pipe open
    except (ValueError, OSError):
        return handler

    def run() -> int:
        try:
            return handler()
        except Exception as error:
            if isinstance(error, USER_ERRORS):
                reason = str(error)
            else:
                reason = f"internal error: {type(error).__name__}: {error}"
            with contextlib.suppress(OSError):
                os.write(fd, reason.encode(errors="replace")[:4096] + b"\n")
            raise

    return run


def _stop(args: argparse.Namespace) -> int:
    client = _running_client()
    if client is None:
        print("the glcic daemon is not running")
        return 0
    pid = client.status()["pid"]
    client.shutdown()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if not connection_file_path().exists() and not DaemonLock.is_held():
            print(f"stopped the glcic daemon (pid {pid})")
            return 0
        time.sleep(0.1)
    raise GlcicError(f"the daemon (pid {pid}) did not stop within {STOP_TIMEOUT_S:g} s")


def _status(args: argparse.Namespace) -> int:
    status = _require_running().status()
    print(_describe(status))
    print(
        f"  version {status['version']}, protocol {status['protocol']}, "
        f"up {status['uptime_s']:.0f} s"
    )
    print(f"  loaded models: {', '.join(status['loaded_models']) or 'none'}")
    for name, error in status["model_errors"].items():
        print(f"  model {name} failed to load: {error}")
    print(f"  queue: {status['queue_length']} waiting, running: {status['running'] or 'nothing'}")
    print(f"  requests served: {status['requests_served']}")
    return 0


def _models(args: argparse.Namespace) -> int:
    """The running daemon's models; without a daemon, the folder's (the same files and rule)."""
    from glcic.model_listing import folder_models, format_models

    client = _running_client()
    if client is None:
        print(
            f"{PROG}: the daemon is not running; listing the model folder {models_dir()}",
            file=sys.stderr,
        )
        models = folder_models()
    else:
        models = client.models()
    for line in format_models(models):
        print(line)
    return 0


def _complete(args: argparse.Namespace) -> int:
    import numpy as np

    from glcic.daemon.remote import complete_remote
    from glcic.image_io import check_writable_format, read_image, read_mask, write_image

    check_writable_format(args.out)
    image = read_image(args.image)
    mask = read_mask(args.mask)
    if mask.shape != image.shape[:2]:
        raise GlcicError(
            f"image is {image.shape[1]}x{image.shape[0]} but mask is "
            f"{mask.shape[1]}x{mask.shape[0]}; they must be the same size"
        )
    rgba = image if image.shape[2] == 4 else np.dstack([image, np.full(mask.shape, 255, np.uint8)])
    model = None if args.model is None else daemon_model_name(args.model)
    client = Client(timeout=10.0)

    def progress(stage: str, fraction: float) -> None:
        if sys.stderr.isatty():
            print(f"\r{PROG}: {stage} {fraction:.0%}\033[K", end="", file=sys.stderr, flush=True)

    started = time.monotonic()
    # Only the pixels the pipeline will read are sent; the result is the same as for the whole.
    region = complete_remote(client, rgba, mask, model, args.blend, progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    height, width = region.pixels.shape[:2]
    patch = region.pixels[..., : image.shape[2]]
    image[region.y : region.y + height, region.x : region.x + width] = patch
    note = write_image(args.out, image)
    if note:
        print(f"{PROG}: warning: {note}", file=sys.stderr)
    print(f"wrote {args.out}: completed in {time.monotonic() - started:.2f} s")
    return 0


def _install_plugin(args: argparse.Namespace) -> int:
    import importlib

    installer = importlib.import_module(f"glcic.daemon.install_{args.host}")
    try:
        report = installer.install(args.dest, args.python)
    except OSError as error:
        raise GlcicError(f"could not install the {args.host} plugin: {error}") from None
    for path in report.installed:
        print(f"installed {path}")
    for note in report.notes:
        print(note)
    for warning in report.warnings:
        print(f"{PROG}: warning: {warning}", file=sys.stderr)
    for problem in report.problems:
        print(f"{PROG}: warning: {problem}", file=sys.stderr)
    return 1 if report.problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="The local glcic completion daemon.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    start = commands.add_parser("start", help="start the daemon (detached unless --foreground)")
    start.add_argument("--foreground", action="store_true", help="stay attached, log to stderr too")
    start.add_argument("--detached", action="store_true", help=argparse.SUPPRESS)  # by `start`
    add_device_option(start, "auto")
    add_precision_option(start, "the daemon's models run")
    start.add_argument("--port", type=int, default=0, help="TCP port (default: chosen by the OS)")
    start.add_argument(
        "--model",
        help="the model used when a request names none: a name in the model folder or default "
        "(default: default, the folder's default.safetensors or else the built-in model)",
    )
    add_threads_option(start)
    start.add_argument("--listen", default="127.0.0.1", help="address to listen on (loopback)")
    start.add_argument("--max-queue", type=int, default=8, help="requests waiting before 'busy'")
    start.add_argument("--timeout", type=float, default=300.0, help="per-request time limit (s)")
    start.add_argument("--max-side", type=int, default=16384, help="largest image side accepted")
    start.set_defaults(handler=_start)
    for name, handler, text in (
        ("stop", _stop, "stop the running daemon"),
        ("status", _status, "show the running daemon's state"),
        ("models", _models, "list the models (the model folder's, when no daemon runs)"),
    ):
        commands.add_parser(name, help=text).set_defaults(handler=handler)
    completer = commands.add_parser("complete", help="complete an image through the daemon")
    completer.add_argument("image", type=Path)
    completer.add_argument("mask", type=Path)
    completer.add_argument("out", type=Path)
    completer.add_argument(
        "--model", help="a name in the model folder, or default (default: the daemon's default)"
    )
    completer.add_argument("--blend", default="poisson", choices=["poisson", "none"])
    completer.set_defaults(handler=_complete)
    installer = commands.add_parser(
        "install-plugin", help="install the Krita or GIMP plugin for this user"
    )
    installer.add_argument("host", choices=["krita", "gimp"])
    installer.add_argument(
        "--dest", type=Path, help="the host's plugin folder (default: its usual per-user one)"
    )
    installer.add_argument(
        "--python",
        metavar="X.Y",
        help="the host's own Python version, for builds that bundle one (AppImage, Windows, "
        "macOS): pyzmq and msgpack for it are put beside the plugin",
    )
    installer.set_defaults(handler=_install_plugin)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = _telling_parent(lambda: args.handler(args))
    # ValueError: e.g. an unparsable --listen address.
    return run_command(PROG, handler, user_errors=USER_ERRORS)


if __name__ == "__main__":
    sys.exit(main())
