"""What the Krita plugin adds to a completion, measured in a real Krita.

Runs the full Krita (under Xvfb) with the plugin and the test driver in bench mode against a real
daemon, on 4000x3000 documents in 8 and 16-bit RGBA with a 300x200 and a 1500x1000 selection.
For each: the wall time from triggering the action to the new layer, the daemon's own time
(model, crops, blending), the difference (the plugin's reading, converting, sending and
writing), and the longest stretch the UI thread spent away from Krita's event loop: what a
painter would feel as a freeze. Medians of three runs. Needs Krita and Xvfb; --host krita-5.2
runs Debian 13's Krita 5.2 in the cached root (.ci/debian13-root.sh) instead of this machine's.

    python benchmarks/krita_plugin_speed.py [--model FILE] [--host krita-5.1|krita-5.2]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.daemon import Daemon, save_tiny
from support.krita_harness import HOSTS, run_driver


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="model file for the daemon (default: tiny)")
    parser.add_argument("--host", choices=sorted(HOSTS), default="krita-5.1",
                        help="which Krita (default: this machine's)")  # fmt: skip
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
            results = run_driver(root, glcic_home, mode="bench", host=host)
        finally:
            daemon.stop()
    print("| document | selection | wall | daemon | plugin overhead | longest UI stall |")
    print("|---|---|---:|---:|---:|---:|")
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
            f"{wall - daemon_s:.3f} s | {stall * 1000:.0f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
