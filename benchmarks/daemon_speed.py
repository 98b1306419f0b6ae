"""Daemon overhead: round trip through glcic-daemon versus glcic.complete in process.

Usage: python benchmarks/daemon_speed.py [--width 1.0] [--repeats 5]

Starts a real daemon (CPU, a random-weight model of the given width, in a temporary GLCIC_HOME)
and completes the same inputs both ways: a 512x512 image with a 96x96 hole and a 4000x3000 photo
with a 300x200 hole. The daemon path is `complete_remote`, what `glcic-daemon complete` uses: it
sends only the pixels the pipeline reads (the `context_box` around the holes), with the same
result as sending the whole image, which is timed too. Target: overhead under 5 % plus 20 ms. Then 8
concurrent clients send small requests (256x256, 48x48 hole) for requests/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from glcic import ModelMetadata, complete, new_model, save_model
from glcic.daemon.protocol import Client
from glcic.daemon.remote import complete_remote

CASES = {"512x512, 96x96 hole": (512, 512, 200, 200, 96, 96),
         "4000x3000, 300x200 hole": (3000, 4000, 1400, 1850, 200, 300)}  # fmt: skip


def _inputs(height, width, y, x, hole_h, hole_w) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    rgba = np.empty((height, width, 4), np.uint8)
    rgba[..., :3] = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    rgba[..., 3] = 255
    mask = np.zeros((height, width), np.uint8)
    mask[y : y + hole_h, x : x + hole_w] = 255
    return rgba, mask


def _interleaved_medians(functions, repeats: int) -> list[float]:
    """Median time of each function, run in turn repeat after repeat, so that the machine's
    drift (other work, clock changes) falls on all of them alike."""
    for function in functions:
        function()  # warm-up
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for index, function in enumerate(functions):
            start = time.perf_counter()
            function()
            times[index].append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = new_model(ModelMetadata(width=args.width))
    with tempfile.TemporaryDirectory() as home:
        os.environ["GLCIC_HOME"] = home
        save_model(model, Path(home) / "models" / "bench.safetensors")
        cli = [sys.executable, "-m", "glcic.daemon.cli"]
        subprocess.run([*cli, "start", "--model", "bench", "--device", "cpu"], check=True)
        try:
            client = Client(timeout=60)
            print(
                f"# daemon round trip vs in process, cpu, width {args.width:g}, "
                f"torch {torch.__version__}, median of {args.repeats}"
            )
            print("| input | in process (s) | daemon (s) | overhead (s) | overhead (%) | target "
                  "| whole image sent (s) |")  # fmt: skip
            print("|---|---|---|---|---|---|---|")
            for name, spec in CASES.items():
                rgba, mask = _inputs(*spec)
                pixels, mask_bytes = rgba.tobytes(), mask.tobytes()
                local, remote, whole = _interleaved_medians(
                    [
                        lambda: complete(rgba, mask, model),  # noqa: B023
                        # What glcic-daemon complete does: send the pixels the pipeline reads.
                        lambda: complete_remote(client, rgba, mask),  # noqa: B023
                        lambda: client.complete(rgba.shape[1], rgba.shape[0], pixels, mask_bytes),  # noqa: B023
                    ],
                    args.repeats,
                )
                overhead = remote - local
                target = 0.05 * local + 0.020
                print(
                    f"| {name} | {local:.3f} | {remote:.3f} | {overhead:.3f} | "
                    f"{100 * overhead / local:.1f} | {'met' if overhead <= target else 'MISSED'} "
                    f"(<= {target:.3f} s) | {whole:.3f} |"
                )
            rgba, mask = _inputs(256, 256, 100, 100, 48, 48)
            pixels, mask_bytes = rgba.tobytes(), mask.tobytes()
            per_client, done = 10, []

            def worker() -> None:
                with Client(timeout=120) as own:
                    for _ in range(per_client):
                        own.complete(256, 256, pixels, mask_bytes)
                        done.append(1)

            threads = [threading.Thread(target=worker) for _ in range(8)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - start
            (single,) = _interleaved_medians(
                [lambda: client.complete(256, 256, pixels, mask_bytes)], 5
            )
            print(
                f"\n8 concurrent clients x {per_client} requests (256x256, 48x48 hole): "
                f"{len(done) / elapsed:.1f} requests/s ({len(done)} in {elapsed:.1f} s); "
                f"one client alone: {1 / single:.1f} requests/s"
            )
        finally:
            subprocess.run([*cli, "stop"], check=False)


if __name__ == "__main__":
    main()
