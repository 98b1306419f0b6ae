"""Colour cast along the image border, against the cast inside the image (issue 15's band).

A hole that runs into the image border gets a coloured band along that border: the shipped
network never saw a hole at its input's edge. This measures it on real photos and real masks:
dev photos, each with a border-touching mask of the 30-60 % bins, completed as users get them
(Poisson blend), as the model file asks (`border_blend`).

For each pair, the cast of a region is the length of the mean colour error vector (fill minus
truth, RGB, 0-255) over the hole pixels in it: a fill that is too pink by 10 levels in red and
blue has a cast of 14, whatever its texture. "band" is the hole pixels within BAND px of an
image edge the hole touches, "inside" the hole pixels farther than BAND px from every edge.
Band pixels lie farther from known pixels than most inside ones, so the fair comparison is the
third column: the inside pixels weighed to the band's distances from known pixels. Each cast is
also split into its brightness (grey-axis) and hue parts (`split_cast`): photos darken toward
their edges, so much of the band's cast is brightness for every fill.

    python benchmarks/border_band.py [--model default|telea|ns|FILE] [--photos 30]
        [--blend poisson|none] [--border-blend telea|mirror] [--precision auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from network_speed import cpu_name  # noqa: E402  (same folder: the scripts run as files)
from support.data import shared_data  # noqa: E402

from glcic.blending import BORDER_BLENDS  # noqa: E402
from glcic.model_file import CompletionModel, load_model  # noqa: E402
from glcic.model_names import resolve_model  # noqa: E402
from glcic.precision import PRECISIONS  # noqa: E402
from glcic.training.border_band import (  # noqa: E402
    BAND,
    band_and_inside_errors,
    border_masks,
    split_cast,
)
from glcic.training.evaluate import BASELINES, Method, baseline_method, model_method  # noqa: E402
from glcic.training.pairing import find_images, load_mask  # noqa: E402


def method_for(name: str, blend: str, precision: str, border: str | None = None) -> Method:
    """A classical baseline by name, or a model (path, name, or default) as users run it;
    `border` overrides the file's `border_blend`."""
    if name in BASELINES:
        return baseline_method(name)
    model = load_model(resolve_model(name), precision=precision)
    if border is not None:
        model = CompletionModel(model.network, replace(model.metadata, border_blend=border))
    return model_method(model, blend)


def band_casts(method: Method, photos: int) -> tuple[np.ndarray, float]:
    """Casts over the first `photos` dev photos, each with a border-touching mask, as an array
    (pair, region: band / inside / matched inside, part: cast / brightness / hue), and the
    median seconds one completion took."""
    masks = border_masks(shared_data("masks/nvidia-irregular"))
    rows, seconds = [], []
    for index, photo_path in enumerate(find_images(shared_data("dev/bsds500-val"))[:photos]):
        truth = np.asarray(Image.open(photo_path).convert("RGB"))
        mask = load_mask(masks[(index * 7) % len(masks)], *truth.shape[:2])  # spread over BINS
        started = time.perf_counter()
        filled = method(truth, mask)
        seconds.append(time.perf_counter() - started)
        errors = band_and_inside_errors(filled, truth, mask > 0)
        if errors is not None:
            rows.append([(np.linalg.norm(error), *split_cast(error)) for error in errors])
    return np.array(rows), float(np.median(seconds))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--photos", type=int, default=30)
    parser.add_argument("--blend", choices=("poisson", "none"), default="poisson")
    parser.add_argument(
        "--border-blend", choices=BORDER_BLENDS, help="override the model file's border_blend"
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    args = parser.parse_args()
    method = method_for(args.model, args.blend, args.precision, args.border_blend)
    casts, seconds = band_casts(method, args.photos)
    edge = f" ({args.border_blend} at the image edge)" if args.border_blend else ""
    print(f"# border band, model {args.model}, blend {args.blend}{edge}, {len(casts)} pairs, "
          f"band {BAND} px, {cpu_name()}, precision {args.precision}")  # fmt: skip
    print("| cast (0-255) | band | inside | inside, band's distances |")
    print("|---|---:|---:|---:|")
    for name, part, reduce in (
        ("mean", 0, np.nanmean),
        ("median", 0, np.nanmedian),
        ("brightness part, mean", 1, np.nanmean),
        ("hue part, mean", 2, np.nanmean),
    ):
        cells = " | ".join(f"{reduce(casts[:, k, part]):.1f}" for k in range(3))
        print(f"| {name} | {cells} |")
    over = [(casts[:, k, 0] > 20).sum() for k in range(3)]
    print(f"| pairs over 20 | {over[0]} | {over[1]} | {over[2]} |")
    print(f"median completion time per pair: {seconds:.3f} s (the first includes warm-up)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
