"""Installing the GIMP 3 plug-in: a folder named like its main file, in GIMP's plug-ins folder.

GIMP 3 runs `plug-ins/NAME/NAME.py` (executable) and nothing else in that folder, so the thin
client and the plugins' shared module can sit beside it. Linux distribution builds run it with
the system Python, which gets pyzmq and msgpack from the distribution's packages; the Windows
and macOS builds bundle their own Python, for which wheels are unpacked into `vendor/`.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from glcic.daemon.plugin_install import (
    VENDOR_DIR,
    InstallReport,
    plugin_source,
    python_can_import,
    replace_tree,
    system_python,
    vendor_client_requirements,
)

PLUGIN_NAME = "glcic_complete"
#: The Python that GIMP 3's Windows installer bundles (without pyzmq), used when no installed
#: GIMP shows its own version.
BUNDLED_PYTHON = "3.12"
FLATPAK_CONFIG = Path(".var") / "app" / "org.gimp.GIMP" / "config"
MENU_ENTRY = "Filters > Enhance > Content-aware complete"


def gimp_plugins_dir() -> Path:
    """GIMP 3's per-user plug-ins folder on this system (GIMP3_DIRECTORY moves it, as in GIMP)."""
    explicit = os.environ.get("GIMP3_DIRECTORY")
    if explicit:
        return Path(explicit) / "plug-ins"
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "GIMP" / "3.0" / "plug-ins"


def gimp_install_dirs() -> list[Path]:
    """Where GIMP 3's Windows and macOS installers put GIMP (holding lib/pythonX.Y)."""
    if sys.platform == "win32":
        per_user, all_users = os.environ.get("LOCALAPPDATA"), os.environ.get("PROGRAMFILES")
        return [
            *([Path(per_user) / "Programs" / "GIMP 3"] if per_user else []),
            *([Path(all_users) / "GIMP 3"] if all_users else []),
        ]
    if sys.platform == "darwin":
        app = Path("GIMP.app") / "Contents" / "Resources"
        return [Path("/Applications") / app, Path.home() / "Applications" / app]
    return []


def bundled_python_version(install_dirs: list[Path]) -> str | None:
    """The X.Y of the Python found in the first GIMP install holding a lib/pythonX.Y folder."""
    for base in install_dirs:
        versions = []
        for folder in (base / "lib").glob("python3.*"):
            minor = folder.name.removeprefix("python3.")
            if folder.is_dir() and minor.isdigit():
                versions.append(int(minor))
        if versions:
            return f"3.{max(versions)}"
    return None


def install(dest: Path | None, python: str | None) -> InstallReport:
    """Install into `dest` (a plug-ins folder; default: GIMP 3's own for this user)."""
    report = InstallReport()
    plugins = dest if dest is not None else gimp_plugins_dir()
    folder = plugins / PLUGIN_NAME
    bundled = python
    if bundled is None and sys.platform in ("win32", "darwin"):
        found = bundled_python_version(gimp_install_dirs())
        bundled = found or BUNDLED_PYTHON
        if found is None:
            report.notes.append(
                f"no installed GIMP 3 found to read its Python version from; assuming Python "
                f"{BUNDLED_PYTHON} (run again with --python X.Y if your GIMP bundles another)"
            )
    wheels: list[str] = []

    def prepare(tree: Path) -> None:
        main = tree / f"{PLUGIN_NAME}.py"
        main.chmod(main.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        if bundled is not None:  # before the swap: offline, the old install keeps working
            wheels.extend(vendor_client_requirements(tree / VENDOR_DIR, bundled))

    replace_tree(plugin_source("gimp") / PLUGIN_NAME, folder, Path("."), prepare=prepare)
    report.installed.append(folder)

    if bundled is not None:
        report.notes.append(f"unpacked for GIMP's Python {bundled}: {', '.join(wheels)}")
    elif not python_can_import(system_python()):
        report.problems.append(
            "GIMP's Python (the system python3 on Linux distribution builds) cannot import "
            "pyzmq and msgpack. Install them with your package manager, e.g.\n"
            "    sudo apt install python3-zmq python3-msgpack      (Debian, Ubuntu)\n"
            "    sudo dnf install python3-zmq python3-msgpack      (Fedora)\n"
            "or, for a GIMP with its own Python (Flatpak, AppImage), run this command again "
            "with --dest (that GIMP's plug-ins folder) and --python X.Y (its Python's version)."
        )
    flatpak = Path.home() / FLATPAK_CONFIG
    if dest is None and sys.platform.startswith("linux") and flatpak.is_dir():
        report.notes.append(
            f"GIMP from Flathub reads plug-ins from {flatpak / 'GIMP' / '3.0' / 'plug-ins'} "
            "instead, and runs them with its own Python: for that GIMP run this command again "
            "with --dest set to that folder and --python set to its Python's version"
        )
    report.notes.append(
        f"restart GIMP, then use {MENU_ENTRY} (with the daemon running: glcic-daemon start)"
    )
    return report
