"""Pipeline overhead and memory on large photos: does cost follow the holes, not the image?

Usage: python benchmarks/pipeline_speed.py [--device cpu|cuda] [--width 1.0]

Cases (from the pipeline issue): a 4000x3000 RGB photo with a 300x200 hole, and an 8000x8000
RGBA image with a 200x200 hole. For each: total time of `glcic.complete`, the network's own time
on its crops, their ratio (target <= 1.3), and peak memory. Each case runs in a fresh process so
its peak resident memory (ru_maxrss) is its own. Memory is reported as the rise over the process
with the libraries imported. "Model" is its weights plus its working memory on this crop,
measured by a warm-up run on the crop window alone; the target is a peak under twice the image's
bytes plus that. Each case runs returning a new array (one image-sized copy by construction) and
in place. Timing does not depend on the weights, so a random-weight model of the paper's size is
used; the photo is a BSDS500 photo scaled up when ../shared/data is present.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CASES = {
    "4000x3000 RGB, 300x200 hole": ((3000, 4000, 3), (1400, 1600, 1850, 2150)),
    "8000x8000 RGBA, 200x200 hole": ((8000, 8000, 4), (3900, 4100, 3900, 4100)),
}
_BASELINE = 0
SHARED_PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "dev" / "bsds500-val"


def _rss_bytes() -> int:
    """Current resident memory of this process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def _make_image(shape: tuple[int, int, int]) -> np.ndarray:
    import cv2

    height, width, channels = shape
    photos = sorted(SHARED_PHOTOS.glob("*.jpg")) if SHARED_PHOTOS.is_dir() else []
    if photos:
        small = cv2.cvtColor(cv2.imread(str(photos[0])), cv2.COLOR_BGR2RGB)
        rgb = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    else:
        rng = np.random.default_rng(0)
        rgb = cv2.resize(
            rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), (width, height), cv2.INTER_CUBIC
        )
    if channels == 4:
        image = np.empty(shape, np.uint8)
        image[..., :3] = rgb
        image[..., 3] = 255
        return image
    return rgb


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_case(name: str, device: str, width: float, inplace: bool) -> dict:
    import torch

    from glcic import CompletionStats, ModelMetadata, complete, new_model
    from glcic.crops import Box, HoleGroup, plan_crop
    from glcic.networks import RECEPTIVE_FIELD_RADIUS
    from glcic.pipeline import DEFAULT_MAX_WORKING_SIDE

    torch.manual_seed(0)
    # The shipped default model's context shift, so its per-crop cost is in the figures.
    model = new_model(ModelMetadata(width=width, context_shift=0.5)).to(device)
    shape, (y0, y1, x0, x1) = CASES[name]
    hole = Box(x0, y0, x1, y1)
    plan = plan_crop(
        HoleGroup(hole, min(hole.width, hole.height)), shape[:2],
        model.metadata.hole_size_range[1], RECEPTIVE_FIELD_RADIUS, DEFAULT_MAX_WORKING_SIDE,
    )  # fmt: skip
    # Warm-up on an image the size of the crop, with the hole where it falls in the crop: the
    # same network input, so kernel selection is not timed, and the model's working memory on
    # this crop is measured before the large image exists (ru_maxrss only ever grows).
    crop = plan.crop
    warm_image = _make_image((crop.height, crop.width, shape[2]))
    warm_mask = np.zeros((crop.height, crop.width), np.uint8)
    warm_mask[hole.offset(-crop.x0, -crop.y0).slices] = 255
    complete(warm_image, warm_mask, model)
    model_and_working_set = _peak_rss_bytes() - _BASELINE
    del warm_image, warm_mask
    gc.collect()

    image = _make_image(shape)
    mask = np.zeros(shape[:2], np.uint8)
    mask[hole.slices] = 255
    stats = CompletionStats()
    start = time.perf_counter()
    complete(image, mask, model, stats=stats, inplace=inplace)
    total = time.perf_counter() - start
    return {
        "case": name + (", in place" if inplace else ""),
        "total_s": total,
        "network_s": stats.network_seconds,
        "ratio": total / stats.network_seconds,
        "crops": [f"{p.crop.width}x{p.crop.height} at scale {p.scale:.2f}" for p in stats.crops],
        "image_mb": image.nbytes / 1e6,
        "model_mb": model_and_working_set / 1e6,
        "peak_mb": (_peak_rss_bytes() - _BASELINE) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--inplace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        global _BASELINE
        import cv2  # noqa: F401
        import torch  # noqa: F401

        _BASELINE = _rss_bytes()  # libraries imported, nothing else
        print(json.dumps(run_case(args.case, args.device, args.width, args.inplace)))
        return
    print(f"# glcic.complete on large images, {args.device}, network width {args.width:g}")
    print(
        "| case | crop | total (s) | network (s) | total/network | image (MB) "
        "| model + working set (MB) | peak (MB) | target: 2 x image + model (MB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, inplace in [(name, inplace) for name in CASES for inplace in (False, True)]:
        output = subprocess.run(
            [sys.executable, __file__, "--case", name, "--device", args.device,
             "--width", str(args.width)] + (["--inplace"] if inplace else []),
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        r = json.loads(output.strip().splitlines()[-1])
        print(
            f"| {r['case']} | {'; '.join(r['crops'])} | {r['total_s']:.2f} | "
            f"{r['network_s']:.2f} | {r['ratio']:.2f} | {r['image_mb']:.0f} | "
            f"{r['model_mb']:.0f} | {r['peak_mb']:.0f} | "
            f"{2 * r['image_mb'] + r['model_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
