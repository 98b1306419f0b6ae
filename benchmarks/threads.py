"""How many CPU threads should a completion use? Times one 512x512 completion per thread count.

Usage: python benchmarks/threads.py [--threads 1,2] [--repeats 5] [--model default]

Each thread count runs in a fresh process (torch fixes its pool at first use), which loads the
model, warms up once, then times `--repeats` completions of a 512x512 photo with a thin
X-shaped hole (two 12 px scratches from corner to corner: thin, so nothing is scaled down, and
long, so the network reads the whole 512x512 image). It prints the processor,
the core count, the load average before each run (a training run on the same cores is the
"under load" case), and the median and best seconds per completion. Use `--threads` with the
same values that `glcic complete --threads N` takes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

SIDE = 512
STROKE = 12


def processor_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what platform reports."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _one(threads: int, repeats: int, model_spec: str) -> dict:
    """Runs in the child: times `repeats` completions with `threads` threads."""
    import cv2
    import numpy as np

    from glcic.model_file import load_model
    from glcic.model_names import resolve_model
    from glcic.pipeline import CompletionStats, complete
    from glcic.threads import set_threads

    set_threads(threads)
    model = load_model(resolve_model(model_spec), precision="float32")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(xx / 29), 128 + 90 * np.cos(yy / 17), (xx + yy) / 4], -1)
    image = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((SIDE, SIDE), np.uint8)
    last = SIDE - 1 - STROKE
    cv2.line(mask, (STROKE, STROKE), (last, last), 255, STROKE)
    cv2.line(mask, (STROKE, last), (last, STROKE), 255, STROKE)
    complete(image, mask, model)  # warm-up: allocator, fused network
    seconds, network, crop = [], [], None
    for _ in range(repeats):
        stats = CompletionStats()
        began = time.perf_counter()
        complete(image, mask, model, stats=stats)
        seconds.append(time.perf_counter() - began)
        network.append(stats.network_seconds)
        crop = stats.crops[0].padded_size
    return {"threads": threads, "seconds": seconds, "network_seconds": network, "crop": crop}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma list of thread counts")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="default", help="path, name, or default")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_one(args.child, args.repeats, args.model)))
        return 0
    counts = [int(part) for part in args.threads.split(",") if part.strip()]
    print(f"processor: {processor_model()}, {os.cpu_count()} logical cores")
    print(f"{SIDE}x{SIDE} image, X of {STROKE} px scratches, {args.repeats} timed runs")
    for threads in counts:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        command = [sys.executable, __file__, "--child", str(threads)]
        command += ["--repeats", str(args.repeats), "--model", args.model]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"threads {threads}: failed\n{done.stderr}", file=sys.stderr)
            return 1
        result = json.loads(done.stdout.strip().splitlines()[-1])
        times, network = result["seconds"], result["network_seconds"]
        print(
            f"threads {threads}: median {statistics.median(times):.2f} s, "
            f"best {min(times):.2f} s per completion (network median "
            f"{statistics.median(network):.2f} s, crop {result['crop']}), "
            f"load average before {load:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
