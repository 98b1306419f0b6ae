"""Training throughput (images/s) per phase, for widths 1.0 and 0.5.

Usage: python benchmarks/training_speed.py [--size 128] [--batch 8] [--steps 5] [--device cpu]
                                           [--precision float32,bfloat16,auto] [--widths 1,0.5]
                                           [--loss mse|l1|poisson-l1] [--compile]

Times `Trainer.train_step` on a fixed batch (data loading excluded: it runs in DataLoader
workers beside the training), after one warm-up step per phase. At --size 128 the local patch is
64 and holes 48-64 px (the cpu-small preset); at 256 the paper's 128 and 96-128. Each
precision asked for is timed in the same run (`auto`: what `glcic.precision` picks here).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from network_speed import cpu_name  # same folder: the scripts run as files
from PIL import Image

from glcic.precision import PRECISIONS
from glcic.training.config import build_config
from glcic.training.losses import RECONSTRUCTION_LOSSES
from glcic.training.trainer import Trainer


def _images(folder: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    for index in range(4):
        pixels = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((size * 3 // 2, size * 3 // 2)).save(folder / f"{index}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="float32,bfloat16,auto", help="comma list")
    parser.add_argument("--widths", default="1,0.5", help="comma list")
    parser.add_argument(
        "--compile", action="store_true", help="also time each case with torch.compile"
    )
    parser.add_argument(
        "--loss", choices=sorted(RECONSTRUCTION_LOSSES), default="mse", help="reconstruction loss"
    )
    args = parser.parse_args()
    asked = [name.strip() for name in args.precision.split(",") if name.strip()]
    if not asked or any(name not in PRECISIONS for name in asked):
        parser.error(f"--precision: a comma list of {', '.join(PRECISIONS)}")
    logging.getLogger("glcic.training").setLevel(logging.WARNING)
    local = args.size // 2
    print(
        f"# training images/s, {args.device}, {args.size}x{args.size} crops, local {local}, "
        f"batch {args.batch}, {args.loss} loss, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, "
        f"{cpu_name()}, {torch.backends.cpu.get_cpu_capability()}"
    )
    print("| precision | width | compiled | completion | discriminator | joint |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        _images(data, args.size)
        compiled = (False, True) if args.compile else (False,)
        cases = [(n, float(w), c) for n in asked for w in args.widths.split(",") for c in compiled]
        for name, width, compile_ in cases:
            overrides = {
                "width": width, "image_size": args.size, "rescale_min": args.size,
                "rescale_max": args.size * 3 // 2, "local_size": local,
                "hole_min": local * 3 // 4, "hole_max": local, "batch_size": args.batch,
                "completion_steps": 10, "discriminator_steps": 10, "total_steps": 30,
                "workers": 0, "mean_images": 4, "precision": name, "compile": compile_,
                "reconstruction_loss": args.loss,
            }  # fmt: skip
            config = build_config(None, None, overrides)
            run = Path(tmp) / f"run-{name}-{width}-{compile_}"
            trainer = Trainer(config, [data], run, device=args.device)
            batch = next(iter(trainer._loader()))
            rates = []
            for first_step in (0, 10, 20):
                trainer.step = first_step
                trainer.train_step(batch)  # warm-up (and compilation, when asked)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.steps):
                    trainer.step = first_step + 1
                    trainer.train_step(batch)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                rates.append(args.steps * args.batch / (time.perf_counter() - start))
            label = name if name != "auto" else f"auto = {trainer.precision.describe()}"
            figures = " | ".join(f"{rate:.1f}" for rate in rates)
            print(f"| {label} | {width:g} | {'yes' if compile_ else 'no'} | {figures} |")


if __name__ == "__main__":
    main()
