"""Forward time and achieved GFLOP/s of the completion network.

Usage: python benchmarks/network_speed.py [--device cpu|cuda] [--repeats N]
                                          [--precision float32,bfloat16,auto] [--sizes 256,512]

FLOPs are counted by torch's own FlopCounterMode (2 per multiply-add), so the figure is what the
network needs, not an estimate. Both the network as trained and its inference form with
BatchNorm folded into the convolutions (what `glcic.complete` runs) are timed against the
paper network's FLOP count. CPU runs in float32 with channels_last, the layout oneDNN's
convolutions are fastest in; CUDA runs in bfloat16 autocast.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from glcic.networks import CompletionNetwork, FusedCompletionNetwork
from glcic.precision import PRECISIONS, Precision, resolve_precision

SIZES = (256, 512)
WIDTHS = (1.0, 0.5)


def cpu_name() -> str:
    """The CPU model, from /proc/cpuinfo where there is one, with the core count."""
    name = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def count_flops(network: torch.nn.Module, size: int) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network(torch.zeros(1, 4, size, size))
    return counter.get_total_flops()


def time_forward(
    network: torch.nn.Module, size: int, device: str, repeats: int, precision: Precision
) -> float:
    x = torch.rand(1, 4, size, size, device=device).to(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), precision.autocast(torch.device(device)):
        network(x)  # warm-up: kernel selection and allocations
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            network(x)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="float32,bfloat16,auto", help="comma list")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="comma list")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="comma list")
    args = parser.parse_args()
    asked = [name.strip() for name in args.precision.split(",") if name.strip()]
    if not asked or any(name not in PRECISIONS for name in asked):
        parser.error(f"--precision: a comma list of {', '.join(PRECISIONS)}")
    sizes = [int(value) for value in args.sizes.split(",")]
    widths = [float(value) for value in args.widths.split(",")]
    torch.manual_seed(0)
    machine = torch.cuda.get_device_name() if args.device == "cuda" else cpu_name()
    print(
        f"# completion network forward, {args.device} ({machine}, "
        f"{torch.backends.cpu.get_cpu_capability()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(
        "| precision | width | input | GFLOP | time (s) | GFLOP/s | BN folded: time (s) | GFLOP/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in asked:
        precision = resolve_precision(name, args.device, "training")
        label = name if name != "auto" else f"auto = {precision.describe()}"
        for width in widths:
            network = CompletionNetwork(width).eval()
            # What the pipeline runs: the network with BatchNorm folded into the convolutions.
            fused = FusedCompletionNetwork(network)
            for size in sizes:
                flops = count_flops(network, size)
                row = f"| {label} | {width:g} | {size}x{size} | {flops / 1e9:.1f} |"
                for module in (network, fused):
                    module.to(args.device, memory_format=torch.channels_last)
                    seconds = time_forward(module, size, args.device, args.repeats, precision)
                    module.to("cpu")
                    row += f" {seconds:.3f} | {flops / seconds / 1e9:.0f} |"
                print(row, flush=True)


if __name__ == "__main__":
    main()
