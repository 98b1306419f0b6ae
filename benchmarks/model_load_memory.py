"""Memory to load a model file, against the file's size.

Usage: python benchmarks/model_load_memory.py [--widths 0.5,1.0] [--storage float32,float16]

Each load runs in a fresh process, which resets its peak resident memory after importing glcic
and reads the peak after `load_model`; the rise is what loading cost. `load_model`
validates the layout before reading, reads each tensor straight from the file and builds the
network on the meta device, so a float32 file should cost about its own size (float16 files
are widened to float32: about twice theirs). Reading the whole file and letting safetensors
copy it, as before, cost 2.2x.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from network_speed import cpu_name  # same folder: the scripts run as files

from glcic import ModelMetadata, new_model, save_model

_MEASURE = """
import sys
import glcic

def status(key):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(key))

with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")  # resets the peak (VmHWM) to the current resident size
before = status("VmHWM:")
glcic.load_model(sys.argv[1])
print(before, status("VmHWM:"))
"""


def peak_kib(path: Path) -> tuple[int, int]:
    """(resident KiB before loading, peak resident KiB while loading), from a fresh process
    (Linux: the peak is reset through /proc/self/clear_refs after the imports)."""
    output = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(output[0]), int(output[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", default="0.5,1.0")
    parser.add_argument("--storage", default="float32,float16")
    args = parser.parse_args()
    print(f"machine: {cpu_name()}")
    print("| width | storage | file MB | load cost MB | cost / file size |")
    print("|---:|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        for width in (float(w) for w in args.widths.split(",")):
            model = new_model(ModelMetadata(width=width))
            for storage in args.storage.split(","):
                path = Path(folder) / f"w{width}-{storage}.safetensors"
                save_model(model, path, storage=storage)
                size_mb = path.stat().st_size / 2**20
                before, after = peak_kib(path)
                cost_mb = (after - before) / 1024
                print(
                    f"| {width:g} | {storage} | {size_mb:.1f} | {cost_mb:.1f} | "
                    f"{cost_mb / size_mb:.2f} |"
                )
                path.unlink()


if __name__ == "__main__":
    main()
