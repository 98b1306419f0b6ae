"""Installing the Krita plugin: pykrita folder, action file, kritarc entry, importable client."""

from __future__ import annotations

import os
import shutil
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
    write_file_atomic,
)

PLUGIN_NAME = "glcic_complete"
ACTION_FILE = f"{PLUGIN_NAME}.action"
#: The Python that Windows and macOS builds of Krita 5.2 bundle (without pyzmq).
BUNDLED_PYTHON = "3.10"


def krita_resource_dir() -> Path:
    """Krita's per-user resource folder (holding pykrita/ and actions/) on this system."""
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming") / "krita"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "krita"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "krita"


def kritarc_path() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "kritarc"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Preferences" / "kritarc"
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "kritarc"


def enable_in_kritarc(text: str, plugin: str) -> str:
    """kritarc's text with `enable_<plugin>=true` in its [python] section (a Qt INI file, edited
    line by line so everything else in it is kept exactly)."""
    lines = text.splitlines()
    key = f"enable_{plugin}="
    section_start = next((i for i, line in enumerate(lines) if line.strip() == "[python]"), None)
    if section_start is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines += ["[python]", f"{key}true"]
        return "\n".join(lines) + "\n"
    end = next(
        (i for i in range(section_start + 1, len(lines)) if lines[i].startswith("[")), len(lines)
    )
    for i in range(section_start + 1, end):
        if lines[i].startswith(key):
            lines[i] = f"{key}true"
            break
    else:
        lines.insert(section_start + 1, f"{key}true")
    return "\n".join(lines) + "\n"


def venv_shadowing_system_python(path: str | None = None) -> Path | None:
    """The virtual environment whose python3 comes first on PATH, if it hides the system's
    packages.

    Debian's Krita embeds the system Python, which finds its home from the first python3 on
    PATH: with a venv activated (made from /usr/bin/python3 without system site packages) that
    home is the venv, PyQt5 is not importable, and Krita loads no Python plugin at all.
    """
    if sys.platform in ("win32", "darwin"):  # those builds bundle their own Python
        return None
    found = shutil.which("python3", path=path)
    if found is None:
        return None
    venv = Path(found).parent.parent
    config = venv / "pyvenv.cfg"
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "include-system-site-packages" and value.strip().lower() == "true":
            return None
    return venv


def install(dest: Path | None, python: str | None) -> InstallReport:
    """Install into `dest` (a pykrita folder; default: Krita's own for this user)."""
    report = InstallReport()
    source = plugin_source("krita")
    pykrita = dest if dest is not None else krita_resource_dir() / "pykrita"
    package = pykrita / PLUGIN_NAME
    bundled = python or (BUNDLED_PYTHON if sys.platform in ("win32", "darwin") else None)
    wheels: list[str] = []

    def prepare(tree: Path) -> None:
        (tree / ACTION_FILE).unlink()  # Krita reads actions from its actions/ folder
        if bundled is not None:  # before the swap: offline, the old install keeps working
            wheels.extend(vendor_client_requirements(tree / VENDOR_DIR, bundled))

    replace_tree(source / PLUGIN_NAME, package, client_into=Path("."), prepare=prepare)
    shutil.copy2(source / f"{PLUGIN_NAME}.desktop", pykrita / f"{PLUGIN_NAME}.desktop")
    actions = pykrita.parent / "actions"
    actions.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / PLUGIN_NAME / ACTION_FILE, actions / ACTION_FILE)
    report.installed += [package, pykrita / f"{PLUGIN_NAME}.desktop", actions / ACTION_FILE]

    rc = kritarc_path()
    current = rc.read_text(encoding="utf-8") if rc.exists() else ""
    write_file_atomic(rc, enable_in_kritarc(current, PLUGIN_NAME))
    report.installed.append(rc)
    report.notes.append(f"enabled in {rc} ([python] enable_{PLUGIN_NAME}=true)")
    if dest is not None:
        # --dest names the pykrita folder only; what Krita reads from elsewhere must not be
        # written there silently (a user may expect everything to stay inside --dest).
        report.notes.append(
            f"note: --dest holds the plugin itself; Krita also needs its action file, written "
            f"to {actions / ACTION_FILE} (the actions folder beside pykrita), and the plugin "
            f"enabled in this user's settings, {rc}. Both lie outside {pykrita}."
        )

    if bundled is not None:
        report.notes.append(f"unpacked for Krita's Python {bundled}: {', '.join(wheels)}")
    elif not python_can_import(system_python()):
        report.problems.append(
            "Krita's Python (the system python3 on Linux distribution builds) cannot import "
            "pyzmq and msgpack. Install them with your package manager, e.g.\n"
            "    sudo apt install python3-zmq python3-msgpack      (Debian, Ubuntu)\n"
            "    sudo dnf install python3-zmq python3-msgpack      (Fedora)\n"
            "or, for the AppImage or another Krita with its own Python, run this command again "
            "with --python X.Y (that Python's version; Krita 5.2 bundles 3.10)."
        )
    venv = venv_shadowing_system_python() if bundled is None else None
    if venv is not None:
        report.warnings.append(
            f"the virtual environment {venv} comes first on PATH: a Krita started from this "
            "shell loads no Python plugins (\"No module named 'PyQt5'\"). Start Krita from the "
            "desktop menu, or run 'deactivate' first."
        )
    report.notes.append("restart Krita, then use Tools > Scripts > Content-aware complete")
    return report
