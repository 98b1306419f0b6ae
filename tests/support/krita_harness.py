"""Running a real Krita with glcic's plugin and the test driver (tests/krita/glcic_test_driver).

Shared by tests/test_krita_plugin.py and benchmarks/krita_plugin_speed.py: installs the plugin
with `glcic-daemon install-plugin` for a fresh user, adds the driver, starts the full Krita on a
private Xvfb screen managed by openbox (as on a desktop: without a window manager no window is
activated, and Krita then never activates layers the way it does for a user) and returns what the
driver wrote. The daemon is the caller's.

Two Krita versions are tested, as users run both: 5.1 from this machine's Debian 12 packages,
and 5.2 from Debian 13's, in the cached Debian 13 root (.ci/debian13-root.sh), entered with
chroot. Xvfb runs here for both: the root shares this machine's network namespace, so Krita
inside it reaches Xvfb's abstract socket (@/tmp/.X11-unix/XN) without the root needing an X
server or the host's /tmp.

The driver records its progress after every scenario; a Krita that crashes, hangs or exits
with another status than 0 fails the run with the scenario it was in and what Krita printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from glcic.daemon.install_krita import enable_in_kritarc

from .hosts import debian13_root, driver_results, in_root, root_env, root_has, virtual_display

DRIVER = Path(__file__).resolve().parents[1] / "krita"
KRITA_TIMEOUT_S = 420
#: Where the test's folder appears inside the Debian 13 root (a tmpfs /tmp of its own there).
INSIDE = "/tmp/glcic-krita"


@dataclass(frozen=True)
class KritaHost:
    """One Krita to test in: this machine's own (root None) or the one in the Debian 13 root."""

    name: str
    root: Path | None = None

    def available(self) -> bool:
        if not (shutil.which("Xvfb") and shutil.which("openbox")):
            return False
        if self.root is None:
            return bool(shutil.which("krita"))
        return root_has(self.root, "krita", "/usr/bin/krita")

    def what_to_install(self) -> str:
        if self.root is None:
            return (
                f"{self.name}, Xvfb and openbox (apt-get install krita xvfb openbox python3-pyqt5 "
                "python3-zmq python3-msgpack)"
            )
        return (
            f"{self.name} (the Debian 13 root .ci/debian13-root.sh builds, here {self.root}, "
            "entered with unshare and chroot), Xvfb and openbox (apt-get install xvfb openbox)"
        )

    def seen(self, path: Path, work: Path) -> str:
        """`path` (under `work`) as Krita sees it."""
        if self.root is None:
            return str(path)
        return f"{INSIDE}/{path.relative_to(work).as_posix()}"

    def command(self, work: Path, env: dict[str, str]) -> tuple[list[str], dict[str, str]]:
        """The command line starting Krita with `env`, and the environment to run it in."""
        if self.root is None:
            return ["krita", "--nosplash"], env
        inside = ["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8"]
        inside += [f"{key}={env[key]}" for key in sorted(env) if key.startswith(("GLCIC_",))]
        inside += [f"HOME={env['HOME']}", f"DISPLAY={env['DISPLAY']}"]
        inside += ["timeout", "-k", "10", str(KRITA_TIMEOUT_S - 20), "krita", "--nosplash"]
        return in_root(self.root, work, INSIDE, inside), root_env()


#: This machine's Krita (Debian 12: 5.1.5) and Debian 13's (5.2.9) in the cached root.
HOSTS = {
    "krita-5.1": KritaHost("Krita 5.1 (Debian 12)"),
    "krita-5.2": KritaHost("Krita 5.2 (Debian 13 root)", debian13_root()),
}


def krita_available() -> bool:
    return HOSTS["krita-5.1"].available()


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


#: Krita's canvas renderers: "opengl" is Krita's default (under Xvfb Mesa's software OpenGL),
#: "qpainter" its canvas without OpenGL. Krita reads the choice at start-up from the key
#: OpenGLRenderer in ~/.config/kritadisplayrc (not kritarc); "none" switches OpenGL off.
CANVASES = ("opengl", "qpainter")


def set_canvas(home: Path, canvas: str) -> None:
    """Choose Krita's canvas renderer for the user whose home is `home` (see CANVASES)."""
    if canvas not in CANVASES:
        raise ValueError(f"unknown canvas {canvas!r}, not one of {CANVASES}")
    display_rc = home / ".config" / "kritadisplayrc"
    if canvas == "opengl" and not display_rc.exists():
        return  # Krita's default already
    lines = display_rc.read_text().splitlines() if display_rc.exists() else []
    lines = [line for line in lines if not line.startswith("OpenGLRenderer=")]
    if canvas == "qpainter":
        # Before any [section]: QSettings' IniFormat reads such keys as top-level ones.
        lines.insert(0, "OpenGLRenderer=none")
    display_rc.parent.mkdir(parents=True, exist_ok=True)
    display_rc.write_text("\n".join(lines) + "\n" if lines else "")


def run_driver(
    root: Path,
    glcic_home: Path,
    mode: str = "test",
    host: KritaHost | None = None,
    canvas: str | None = None,
) -> dict:
    """Run Krita once with the driver in `mode` ("test", "restart" or "bench"); returns its
    results. `root` holds the user's home, which a later run in the same `root` reuses (its
    kritarc included), as a restarted Krita would. `glcic_home` must lie inside `root`.
    `canvas` ("opengl" or "qpainter", see CANVASES) sets Krita's canvas renderer first; None
    leaves the user's setting as it is (Krita's default for a new user: OpenGL)."""
    host = host or HOSTS["krita-5.1"]
    home = root / "home"
    if canvas is not None:
        set_canvas(home, canvas)
    pykrita = home / ".local" / "share" / "krita" / "pykrita"
    install_plugin(host_env(home, glcic_home), pykrita)
    shutil.copytree(DRIVER / "glcic_test_driver", pykrita / "glcic_test_driver",
                    dirs_exist_ok=True)  # fmt: skip
    shutil.copy(DRIVER / "glcic_test_driver.desktop", pykrita)
    kritarc = home / ".config" / "kritarc"
    kritarc.write_text(enable_in_kritarc(kritarc.read_text(), "glcic_test_driver"))
    results = root / f"results-{mode}.json"
    results.unlink(missing_ok=True)
    env = host_env(Path(host.seen(home, root)), Path(host.seen(glcic_home, root)))
    env.update(GLCIC_TEST_RESULTS=host.seen(results, root), GLCIC_DRIVER_MODE=mode)
    with virtual_display(window_manager=True) as display:
        env["DISPLAY"] = display
        command, run_env = host.command(root, env)
        if host.root is not None:
            env = run_env
        started = time.perf_counter()
        try:
            run = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=KRITA_TIMEOUT_S
            )
            stdout, stderr, status = run.stdout, run.stderr, str(run.returncode)
        except subprocess.TimeoutExpired as expired:
            stdout, stderr = _text(expired.stdout), _text(expired.stderr)
            status = f"none: still running after {KRITA_TIMEOUT_S} s, killed"
    seconds = time.perf_counter() - started
    said = f"(exit status {status})\n{stdout[-4000:]}{stderr[-8000:]}"
    document = driver_results(results, host.name, said)
    progress = document.get("progress", {})
    if not progress.get("finished") or status != "0":
        raise RuntimeError(
            f"{host.name} ended after the driver's step {progress.get('steps')}, in scenario "
            f"{progress.get('scenario')!r}, finished: {progress.get('finished')}; Krita said:\n"
            f"{said}"
        )
    document["krita_output"] = {"stdout": stdout, "stderr": stderr}
    document["krita_seconds"] = seconds
    return document


def _text(captured: bytes | str | None) -> str:
    if isinstance(captured, bytes):
        return captured.decode(errors="replace")
    return captured or ""


#: Lines of Krita's output that are warnings of Krita's or Qt's about what the driver or the
#: plugin did (a clean run prints none of them).
WARNING_MARKERS = ("SAFE ASSERT", "ASSERT (krita)", "WARNING", "Warning:", "Traceback", "Error")


#: What the driver writes to Krita's stderr as it starts each scenario.
SCENARIO_MARKER = "glcic test driver: scenario"


def warnings_in(output: str) -> list[str]:
    return [line for line in output.splitlines() if any(m in line for m in WARNING_MARKERS)]


def driver_warnings(output: dict[str, str]) -> list[str]:
    """The warnings Krita printed once the driver had started (`output` as run_driver keeps
    it): at start-up Krita warns about its own installation, plugin or not (5.1:
    "QQml_colorProvider: no color provider has been set!", 5.2: 'requested data for unknown
    action "path-break-at-selection"')."""
    stderr = output["stderr"]
    if SCENARIO_MARKER not in stderr:
        return ["the driver never started a scenario"]
    after = stderr[stderr.index(SCENARIO_MARKER) :]
    stdout = [line for line in warnings_in(output["stdout"]) if not _startup_noise(line)]
    return stdout + warnings_in(after)


def _startup_noise(line: str) -> bool:
    return "QQml_colorProvider" in line or '"path-break-at-selection"' in line
