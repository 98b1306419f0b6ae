"""What the Krita plugin adds to a completion, measured in a real Krita.

Runs the full Krita (under Xvfb) with the plugin and the test driver in bench mode against a real
daemon, on 4000x3000 documents in 8 and 16-bit RGBA with a 300x200 and a 1500x1000 selection.
For each: the wall time from triggering the action to the new layer, the daemon's own time
(model, crops, blending), the difference (the plugin's reading, converting, sending and
writing), and the longest stretch the UI thread spent away from Krita's event loop: what a
painter would feel as a freeze. Medians of three runs. "Krita idle" is the same timer's longest
gap over 1.5 s with the document and selection shown and nothing happening: Krita's own
baseline. Needs Krita and Xvfb; --host krita-5.2 runs Debian 13's Krita 5.2 in the cached root
(.ci/debian13-root.sh) instead of this machine's.

--trace also prints, for every run, when the longest stall began and ended (ms from the
trigger), the plugin's calls of 2 ms or more on the UI thread (and the Krita calls they made),
the longest stretches in which Qt delivered no event at all, each with the event (receiver
class / QEvent type) it was busy with, and which of those fell inside the longest stall. Its
hooks slow the UI thread a little. GLCIC_BENCH_EXPERIMENT=unkept (Krita's activation of the new
layer left alone) or nodialog (no progress dialog) runs the traced benchmark as an experiment.

--canvas qpainter runs Krita without its OpenGL canvas (under Xvfb that is Mesa's software
OpenGL, whose repaints of the whole canvas dominate Krita's own stalls), separating Krita's
repaint cost from the plugin's.

    python benchmarks/krita_plugin_speed.py [--model FILE] [--host krita-5.1|krita-5.2] [--trace]
        [--canvas opengl|qpainter]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.daemon import Daemon, save_tiny
from support.krita_harness import CANVASES, HOSTS, run_driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model file for the daemon (default: tiny)")
    parser.add_argument("--host", choices=sorted(HOSTS), default="krita-5.1",
                        help="which Krita (default: this machine's)")  # fmt: skip
    parser.add_argument("--trace", action="store_true",
                        help="also show where the UI thread's time went in each run (the "
                        "plugin's calls, Qt's events during the longest stall); slows the "
                        "UI thread a little")  # fmt: skip
    parser.add_argument("--canvas", choices=CANVASES, default="opengl",
                        help="Krita's canvas renderer (default: opengl, Krita's own default; "
                        "Mesa's software OpenGL under Xvfb); qpainter switches OpenGL off "
                        "(OpenGLRenderer=none in kritadisplayrc)")  # fmt: skip
    args = parser.parse_args()
    host = HOSTS[args.host]
    if not host.available():
        print(f"needs {host.what_to_install()}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="glcic-krita-bench-") as folder:
        root = Path(folder)
        glcic_home = root / "glcic"
        if args.model:
            (glcic_home / "models").mkdir(parents=True)
            shutil.copy(args.model, glcic_home / "models" / "bench.safetensors")
            name = "bench"
        else:
            save_tiny(glcic_home, "tiny")
            name = "tiny"
        daemon = Daemon(glcic_home, "--model", name)
        daemon.start()
        try:
            mode = "bench-trace" if args.trace else "bench"
            if os.environ.get("GLCIC_BENCH_EXPERIMENT"):  # unkept, nodialog (see the driver)
                mode = "bench-trace-" + os.environ["GLCIC_BENCH_EXPERIMENT"]
                args.trace = True
            results = run_driver(root, glcic_home, mode=mode, host=host, canvas=args.canvas)
        finally:
            daemon.stop()
    if args.trace:
        show_traces(results["bench"])
    print("| document | selection | wall | daemon | plugin overhead | longest UI stall "
          "| Krita idle |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for case in results["bench"]:
        runs = case["runs"]
        if any(run["outcome"] != "done" for run in runs):
            print(f"failed: {case}", file=sys.stderr)
            return 1
        wall = statistics.median(run["wall_s"] for run in runs)
        daemon_s = statistics.median(run["daemon_s"] for run in runs)
        stall = statistics.median(run["longest_stall_s"] for run in runs)
        width, height = case["document"]
        print(
            f"| {width}x{height} RGBA {case['depth']} | {case['selection'][0]}x"
            f"{case['selection'][1]} | {wall:.3f} s | {daemon_s:.3f} s | "
            f"{wall - daemon_s:.3f} s | {stall * 1000:.0f} ms | "
            f"{case['idle_stall_s'] * 1000:.0f} ms |"
        )
    return 0


def show_traces(cases: list) -> None:
    """Each run's longest stall (ms from the trigger), the plugin's calls of 2 ms or more, the
    longest stretches without any Qt event (and the event before each), and the events Qt
    delivered during the longest stall."""
    for case in cases:
        width, height = case["selection"]
        for number, run in enumerate(case["runs"], 1):
            trace = run["trace"]
            began, ended = trace["stall"]
            print(f"## {'/'.join(case['space'])} {width}x{height} run {number}: longest stall "
                  f"{began:.1f}-{ended:.1f} ms ({ended - began:.1f} ms), wall "
                  f"{run['wall_s'] * 1000:.0f} ms")  # fmt: skip
            for name, depth, start, length in trace["spans"]:
                print(f"  {'  ' * depth}{name}: at {start:.1f} ms, {length:.1f} ms")
            for start, length, receiver, kind in trace["silences"]:
                print(f"  silence at {start:.1f} ms for {length:.1f} ms after {receiver} "
                      f"event {kind}")  # fmt: skip
            for name, depth, start, shared in trace["calls_in_stall"]:
                print(f"  in the stall: {'  ' * depth}{name} (from {start:.1f} ms) for "
                      f"{shared:.1f} ms")  # fmt: skip
            for start, length, receiver, kind in trace["silences_in_stall"]:
                print(f"  in the stall: silence at {start:.1f} ms for {length:.1f} ms after "
                      f"{receiver} event {kind}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
