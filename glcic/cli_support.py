"""What every glcic command does with errors: `run_command`.

The commands (`glcic`, `glcic-daemon`, `glcic-train`, `glcic-eval`) promise the same thing: an
error meant for the user is one line on stderr, ``PROG: error: MESSAGE``, and exit status 2;
Ctrl-C is ``PROG: interrupted`` and exit status 130, with no traceback. Anything else is a bug
and surfaces as a traceback. Keeping that promise in one place keeps the commands alike.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from glcic.errors import GlcicError
from glcic.precision import PRECISIONS

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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
    `EXIT_INTERRUPTED`.
    """
    try:
        return int(handler())
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
