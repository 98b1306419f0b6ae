"""`glcic-daemon install-plugin`: put a host plugin where Krita or GIMP looks for it.

A plugin runs inside the host's own Python, which has neither numpy nor torch. What it needs
from us is its own folder plus the wire protocol and thin client (daemon/protocol.py, copied in
as `glcic_client.py`, the name plugins import), and pyzmq and msgpack importable from that
Python: Linux distribution builds use the system Python, where the distribution's packages
provide them; builds that bundle their own Python (Windows, macOS, AppImage) get wheels for that
Python unpacked into the plugin's `vendor/` folder, which the plugin puts on its import path.

Each host lives in its own module (install_krita, install_gimp); this one holds what they share.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from glcic.errors import GlcicError

#: The plugin sources, as installed with the package (see pyproject's package data).
PLUGINS_DIR = Path(__file__).resolve().parent / "plugins"
CLIENT_MODULE = Path(__file__).resolve().parent / "protocol.py"
CLIENT_NAME = "glcic_client.py"
#: The client's other half (finding the daemon), under the name the client imports it by.
DISCOVERY_MODULE = Path(__file__).resolve().parent / "discovery.py"
DISCOVERY_NAME = "glcic_discovery.py"
COMMON_NAME = "glcic_plugin_common.py"
VENDOR_DIR = "vendor"
#: What the thin client imports beyond the standard library.
CLIENT_REQUIREMENTS = ("pyzmq", "msgpack")


class InstallError(GlcicError):
    pass


@dataclass
class InstallReport:
    """What was done, and what the user still has to do (printed by the CLI)."""

    installed: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The install worked, but something around it will get in the way (printed, exit 0).
    warnings: list[str] = field(default_factory=list)
    #: The plugin will not work until the user acts (printed, exit 1).
    problems: list[str] = field(default_factory=list)


def plugin_source(host: str) -> Path:
    """The plugin's source folder: installed package data, or the repository's plugins/."""
    for candidate in (PLUGINS_DIR / host, Path(__file__).resolve().parents[1] / "plugins" / host):
        if candidate.is_dir():
            return candidate
    raise InstallError(f"the {host} plugin's files are missing from this glcic installation")


def replace_tree(
    source: Path,
    destination: Path,
    client_into: Path | None,
    prepare: Callable[[Path], None] | None = None,
) -> None:
    """Copy `source` to `destination` (replacing an older install) without ever leaving a half
    copy: the new tree is built beside it, completed by `prepare(tree)` (e.g. unpacking wheels,
    which may fail offline), and only then renamed into place; on any failure the previous
    install stays as it was. `client_into` is the folder, relative to the tree's root, that
    receives the thin client and the plugins' shared module."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        tree = staging / destination.name
        shutil.copytree(source, tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if client_into is not None:
            shutil.copy2(CLIENT_MODULE, tree / client_into / CLIENT_NAME)
            shutil.copy2(DISCOVERY_MODULE, tree / client_into / DISCOVERY_NAME)
            shutil.copy2(plugin_source("shared") / COMMON_NAME, tree / client_into / COMMON_NAME)
        if prepare is not None:
            prepare(tree)
        old = staging / "old"
        had_old = destination.exists() or destination.is_symlink()
        if had_old:
            os.replace(destination, old)
        try:
            os.replace(tree, destination)
        except OSError:
            if had_old:
                os.replace(old, destination)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_file_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        if path.exists():
            shutil.copymode(path, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def python_can_import(python: str, modules: tuple[str, ...] = ("zmq", "msgpack")) -> bool:
    """Whether the interpreter `python` imports `modules` (False when it cannot be run)."""
    try:
        result = subprocess.run(
            [python, "-c", f"import {', '.join(modules)}"],
            capture_output=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def system_python() -> str:
    """The Python a Linux distribution's Krita or GIMP embeds or runs plug-ins with: the system
    one, not a virtualenv's or pyenv's that may come first on PATH."""
    return "/usr/bin/python3" if Path("/usr/bin/python3").exists() else "python3"


def wheel_platforms() -> list[str]:
    """pip platform tags for the host's bundled Python on this operating system."""
    if sys.platform == "win32":
        return ["win_amd64"]
    if sys.platform == "darwin":
        import platform

        if platform.machine() == "arm64":
            return ["macosx_11_0_arm64", "macosx_10_15_universal2", "macosx_10_9_universal2"]
        return ["macosx_10_15_x86_64", "macosx_10_9_x86_64", "macosx_10_9_universal2"]
    import platform

    machine = platform.machine() or "x86_64"
    return [f"manylinux_2_28_{machine}", f"manylinux_2_17_{machine}", f"manylinux2014_{machine}"]


def vendor_client_requirements(target: Path, python_version: str) -> list[str]:
    """Unpack wheels of the thin client's requirements for CPython `python_version` (e.g.
    "3.10") into `target`; returns the wheel file names. Needs pip and access to PyPI."""
    if not _looks_like_version(python_version):
        raise InstallError(f"--python wants a version like 3.10, not {python_version!r}")
    with tempfile.TemporaryDirectory(prefix="glcic-wheels-") as downloads:
        command = [
            sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
            "--only-binary=:all:", "--no-deps", "--implementation", "cp",
            "--python-version", python_version, "--dest", downloads,
        ]  # fmt: skip
        for platform_tag in wheel_platforms():
            command += ["--platform", platform_tag]
        command += list(CLIENT_REQUIREMENTS)
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
            raise InstallError(
                f"could not download pyzmq and msgpack for Python {python_version}: {detail}"
            )
        wheels = sorted(Path(downloads).glob("*.whl"))
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                _safe_extract(archive, target)
        return [wheel.name for wheel in wheels]


def _safe_extract(archive: zipfile.ZipFile, target: Path) -> None:
    root = target.resolve()
    for member in archive.namelist():
        if not (root / member).resolve().is_relative_to(root):
            raise InstallError(f"refusing a wheel entry outside the vendor folder: {member}")
    archive.extractall(target)


def _looks_like_version(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 2 and all(part.isdigit() for part in parts) and parts[0] == "3"
