"""Training throughput (images/s) per phase, for widths 1.0 and 0.5.

Usage: python benchmarks/training_speed.py [--size 128] [--batch 8] [--steps 5] [--device cpu]

Times `Trainer.train_step` on a fixed batch (data loading excluded: it runs in DataLoader
workers beside the training), after one warm-up step per phase. At --size 128 the local patch is
64 and holes 48-64 px (the cpu-small preset); at 256 the paper's 128 and 96-128.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from glcic.training.config import build_config
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
    args = parser.parse_args()
    logging.getLogger("glcic.training").setLevel(logging.WARNING)
    local = args.size // 2
    print(
        f"# training images/s, {args.device}, {args.size}x{args.size} crops, local {local}, "
        f"batch {args.batch}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| width | completion | discriminator | joint |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        _images(data, args.size)
        for width in (1.0, 0.5):
            overrides = {
                "width": width, "image_size": args.size, "rescale_min": args.size,
                "rescale_max": args.size * 3 // 2, "local_size": local,
                "hole_min": local * 3 // 4, "hole_max": local, "batch_size": args.batch,
                "completion_steps": 10, "discriminator_steps": 10, "total_steps": 30,
                "workers": 0, "mean_images": 4,
            }  # fmt: skip
            config = build_config(None, None, overrides)
            trainer = Trainer(config, [data], Path(tmp) / f"run{width}", device=args.device)
            batch = next(iter(trainer._loader()))
            rates = []
            for first_step in (0, 10, 20):
                trainer.step = first_step
                trainer.train_step(batch)  # warm-up
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                for _ in range(args.steps):
                    trainer.step = first_step + 1
                    trainer.train_step(batch)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                rates.append(args.steps * args.batch / (time.perf_counter() - start))
            print(f"| {width:g} | " + " | ".join(f"{r:.1f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
