"""Running a real Krita with glcic's plugin and the test driver (tests/krita/glcic_test_driver).

Shared by tests/test_krita_plugin.py and benchmarks/krita_plugin_speed.py: installs the plugin
with `glcic-daemon install-plugin` for a fresh user, adds the driver, starts the full Krita on a
private Xvfb screen and returns what the driver wrote. The daemon is the caller's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from glcic.daemon.install_krita import enable_in_kritarc

from .hosts import driver_results, virtual_display

DRIVER = Path(__file__).resolve().parents[1] / "krita"
KRITA_TIMEOUT_S = 420


def krita_available() -> bool:
    return bool(shutil.which("krita") and shutil.which("Xvfb"))


def host_env(home: Path, glcic_home: Path) -> dict[str, str]:
    """The environment of a fresh user: nothing of ours or of a desktop session leaks in."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("XDG_", "GLCIC_", "KDE", "QT_"))
    }
    env.update(HOME=str(home), GLCIC_HOME=str(glcic_home))
    return env


def install_plugin(env: dict[str, str], pykrita: Path) -> None:
    install = subprocess.run(
        [sys.executable, "-m", "glcic.daemon.cli", "install-plugin", "krita", "--dest",
         str(pykrita)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    if install.returncode != 0:
        raise RuntimeError(f"install-plugin failed: {install.stderr}")


def run_driver(root: Path, glcic_home: Path, mode: str = "test") -> dict:
    """Run Krita once with the driver in `mode` ("test" or "bench"); returns its results."""
    home = root / "home"
    env = host_env(home, glcic_home)
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    install_plugin(env, pykrita)
    shutil.copytree(DRIVER / "glcic_test_driver", pykrita / "glcic_test_driver")
    shutil.copy(DRIVER / "glcic_test_driver.desktop", pykrita)
    kritarc = home / ".config" / "kritarc"
    kritarc.write_text(enable_in_kritarc(kritarc.read_text(), "glcic_test_driver"))
    results = root / "results.json"
    env.update(GLCIC_TEST_RESULTS=str(results), GLCIC_DRIVER_MODE=mode)
    with virtual_display() as display:
        env["DISPLAY"] = display
        try:
            run = subprocess.run(
                ["krita", "--nosplash"],
                capture_output=True, text=True, env=env, timeout=KRITA_TIMEOUT_S,
            )  # fmt: skip
            output = run.stdout[-4000:] + run.stderr[-4000:]
        except subprocess.TimeoutExpired as expired:
            output = f"Krita did not finish in {KRITA_TIMEOUT_S} s: {expired}"
    return driver_results(results, "Krita", output)
