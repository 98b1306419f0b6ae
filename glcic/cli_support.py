"""What every glcic command does with errors: `run_command`.

The commands (`glcic`, `glcic-daemon`, `glcic-train`, `glcic-eval`) promise the same thing: an
error meant for the user is one line on stderr, ``PROG: error: MESSAGE``, and exit status 2;
Ctrl-C is ``PROG: interrupted`` and exit status 130, with no traceback. Output piped into a
reader that stops early (`glcic info default | head`) ends the command quietly with status 141,
as a shell tool killed by SIGPIPE would. Anything else is a bug and surfaces as a traceback.
Keeping that promise in one place keeps the commands alike; so do the options that every
command running the network shares (`--precision`, `--device`, `--threads`).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from glcic.errors import GlcicError
from glcic.precision import PRECISIONS
from glcic.threads import MAX_THREADS, default_threads_rule, set_threads

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
#: 128 + SIGPIPE: what a shell reports for a tool whose reader went away.
EXIT_BROKEN_PIPE = 141


def run_command(
    prog: str,
    handler: Callable[[], int],
    *,
    user_errors: tuple[type[Exception], ...] = (GlcicError,),
) -> int:
    """Run `handler` and return its exit status, or the status of the error that stopped it.

    `user_errors` are the exceptions whose message is written for the user (a command that also
    reports, say, a client's errors or a `ValueError` from parsing an address passes them here);
    each is printed as one line and gives `EXIT_USAGE`. `KeyboardInterrupt` gives
    `EXIT_INTERRUPTED`. A closed standard output (the reader of a pipe went away) gives
    `EXIT_BROKEN_PIPE` and no message: the reader asked for no more.
    """
    try:
        status = int(handler())
        sys.stdout.flush()  # inside the try: a closed pipe is often found only here
        return status
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except user_errors as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def add_precision_option(parser: argparse.ArgumentParser, what: str) -> None:
    """`--precision`, worded alike in every command that runs the network; `what` says what
    runs in it (the model, the daemon's models)."""
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help=f"what {what} in: float32, bfloat16, or auto (fast and validated on the device; "
        "the default)",
    )


def _discard_stdout() -> None:
    """Point standard output at the null device, so the interpreter's own flush at exit does
    not hit the closed pipe again and print "Exception ignored ... BrokenPipeError"."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real file behind sys.stdout: nothing will flush it
        pass


def add_device_option(parser: argparse.ArgumentParser, default: str) -> None:
    """`--device`, checked by `glcic.devices.resolve_device` when the command runs."""
    from glcic.devices import DEVICE_CHOICES

    parser.add_argument("--device", default=default, help=f"{DEVICE_CHOICES} (default: {default})")


def thread_count(text: str) -> int:
    """argparse type for `--threads`: a whole number from 1 to MAX_THREADS."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_THREADS}, got {value}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """`--threads N`: the CPU threads the network runs on; apply it with `apply_threads`."""
    parser.add_argument(
        "--threads",
        type=thread_count,
        default=None,
        metavar="N",
        help=f"CPU threads for the network (default: {default_threads_rule()})",
    )


def apply_threads(args: argparse.Namespace) -> int:
    """Set torch's thread count from `args.threads` (or the default); returns the count."""
    return set_threads(args.threads)
