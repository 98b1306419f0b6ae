"""Finding the real host applications (Krita, GIMP 3) the plugin tests run in.

The plugin tests must run in CI, where .ci/run installs the hosts and sets GLCIC_REQUIRE_HOSTS=1:
there a missing host fails the test run. Elsewhere (a developer's laptop without Krita) the
tests skip, saying what to install.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

#: The cached Debian 13 root holding GIMP 3 and Krita 5.2 (.ci/debian13-root.sh builds it).
DEFAULT_DEBIAN13_ROOT = Path("/var/cache/glcic/gimp3-root")
#: Enters that root in a private mount namespace (tests/gimp/run_in_root.sh says how).
ROOT_RUNNER = Path(__file__).resolve().parents[1] / "gimp" / "run_in_root.sh"


def debian13_root() -> Path:
    """Where the Debian 13 root is: GLCIC_DEBIAN13_ROOT, or its older name GLCIC_GIMP_ROOT."""
    chosen = os.environ.get("GLCIC_DEBIAN13_ROOT") or os.environ.get("GLCIC_GIMP_ROOT")
    return Path(chosen) if chosen else DEFAULT_DEBIAN13_ROOT


def root_namespace() -> list[str]:
    """A private mount namespace; without root, in a user namespace where we are root."""
    command = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        command += ["--user", "--map-root-user"]
    return command


def root_env() -> dict[str, str]:
    path = os.environ.get("PATH", "/usr/bin:/bin")
    return {**os.environ, "PATH": f"{path}:/usr/sbin:/sbin"}  # chroot lives in sbin


def root_has(root: Path, package: str, program: str) -> bool:
    """Whether the root is complete (its stamp, written last, lists `package`), holds
    `program`, and can be entered here."""
    stamp = root / ".glcic-ready"
    if not stamp.is_file() or package not in stamp.read_text().split():
        return False
    if not (root / program.lstrip("/")).exists() or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [*root_namespace(), "chroot", str(root), "/bin/true"],
        capture_output=True, env=root_env(), timeout=60, check=False,
    )  # fmt: skip
    return probe.returncode == 0


def in_root(root: Path, work: Path, inside: str, command: list[str]) -> list[str]:
    """The command line running `command` in the root, with the folder `work` seen at `inside`
    (under /tmp) and /dev, /proc mounted only for it."""
    return [*root_namespace(), "bash", str(ROOT_RUNNER), str(root), str(work), inside, *command]


def require_host(available: bool, what: str) -> None:
    if available:
        return
    if os.environ.get("GLCIC_REQUIRE_HOSTS") == "1":
        pytest.fail(f"{what} is required here (GLCIC_REQUIRE_HOSTS=1) but missing")
    pytest.skip(f"{what} is not installed")


@contextlib.contextmanager
def virtual_display(window_manager: bool = False) -> Iterator[str]:
    """A private Xvfb screen; yields its DISPLAY value. With `window_manager`, openbox manages
    it, as a desktop would: without one no window is ever activated, and Krita then never
    activates its views' layers as it does for a user.

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
        display = f":{number}"
        if window_manager:
            with _window_manager(display):
                yield display
        else:
            yield display
    finally:
        _end(server)


def _end(process: subprocess.Popen) -> None:
    """Stop a helper process: politely, then for sure after 10 s."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def _window_manager(display: str) -> Iterator[None]:
    """openbox on `display`, returning once it manages the screen (its --startup command runs
    then) and ended afterwards."""
    with tempfile.TemporaryDirectory(prefix="glcic-wm-") as folder:
        ready = Path(folder) / "ready"
        manager = subprocess.Popen(
            ["openbox", "--sm-disable", "--startup", f"touch {ready}"],
            env={**os.environ, "DISPLAY": display, "HOME": folder},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(300):  # up to 30 s on a loaded machine
                if ready.exists() or manager.poll() is not None:
                    break
                time.sleep(0.1)
            if not ready.exists():
                raise RuntimeError("openbox did not start on the virtual screen")
            yield
        finally:
            _end(manager)


def driver_results(results: Path, host: str, output: str) -> dict[str, Any]:
    """What a driver script inside a host wrote, or an error carrying what the host said."""
    if not results.exists():
        raise RuntimeError(f"the driver wrote no results; {host} said:\n{output}")
    document = json.loads(results.read_text())
    if "error" in document:
        raise RuntimeError(f"{document['error']}\n{host} said:\n{output[-4000:]}")
    return document
