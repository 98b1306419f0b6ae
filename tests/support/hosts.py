"""Finding the real host applications (Krita, GIMP 3) the plugin tests run in.

The plugin tests must run in CI, where .ci/run installs the hosts and sets GLCIC_REQUIRE_HOSTS=1:
there a missing host fails the test run. Elsewhere (a developer's laptop without Krita) the
tests skip, saying what to install.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def require_host(available: bool, what: str) -> None:
    if available:
        return
    if os.environ.get("GLCIC_REQUIRE_HOSTS") == "1":
        pytest.fail(f"{what} is required here (GLCIC_REQUIRE_HOSTS=1) but missing")
    pytest.skip(f"{what} is not installed")


@contextlib.contextmanager
def virtual_display() -> Iterator[str]:
    """A private Xvfb screen; yields its DISPLAY value.

    Xvfb picks a free display number itself and reports it on a pipe (-displayfd), so parallel
    runs cannot race for the same number as they can with xvfb-run -a. -noreset keeps the
    server from resetting when its first client disconnects, which made Krita's own connection
    fail now and then.
    """
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [
            "Xvfb",
            "-displayfd",
            str(write_end),
            "-screen",
            "0",
            "1280x1024x24",
            "-nolisten",
            "tcp",
            "-noreset",
        ],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as pipe:
            number = pipe.readline().strip()
        if not number.isdigit():
            raise RuntimeError("Xvfb did not start")
        yield f":{number}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def driver_results(results: Path, host: str, output: str) -> dict[str, Any]:
    """What a driver script inside a host wrote, or an error carrying what the host said."""
    if not results.exists():
        raise RuntimeError(f"the driver wrote no results; {host} said:\n{output}")
    document = json.loads(results.read_text())
    if "error" in document:
        raise RuntimeError(f"{document['error']}\n{host} said:\n{output[-4000:]}")
    return document
