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
third column: the inside pixels weighed to the band's distances from known pixels.

    python benchmarks/border_band.py [--model default|telea|ns|FILE] [--photos 30]
        [--blend poisson|none] [--border-blend telea|mirror] [--precision auto|float32|bfloat16]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import cv2
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
from glcic.training.evaluate import BASELINES, Method, baseline_method, model_method  # noqa: E402
from glcic.training.pairing import find_images, load_mask  # noqa: E402

#: Width of the border band, in pixels of the photo.
BAND = 8

#: Bins whose border-touching masks are used: large enough that the hole reaches well in.
BINS = (3, 4, 5)


def border_masks(folder: Path) -> list[Path]:
    """The masks of BINS whose hole reaches the mask's edge, in name order. (Found by looking:
    the data README says the first thousand numbers of a bin touch the border, but in these
    files it is the second thousand.)"""
    chosen = []
    for path in sorted(folder.glob("*.png")):
        if int(path.stem) // 2000 not in BINS:
            continue
        hole = np.asarray(Image.open(path).convert("L")) > 127
        if hole[0].any() or hole[-1].any() or hole[:, 0].any() or hole[:, -1].any():
            chosen.append(path)
    return chosen


#: Distance-to-known bins (px) for matching the inside pixels to the band's.
DISTANCE_EDGES = (0, 2, 4, 8, 16, 32, 64, 10_000)


def band_and_inside(
    filled: np.ndarray, truth: np.ndarray, hole: np.ndarray
) -> tuple[float, float, float] | None:
    """(band cast, inside cast, distance-matched inside cast) for one pair, or None if the hole
    misses the border or has too little inside.

    Band pixels lie on average farther from known pixels than inside ones (the image edge is not
    known), and any fill drifts more far from its known neighbours. The matched cast weighs the
    inside pixels so their distances to the nearest known pixel have the band's histogram: it
    is what a hole of the same shape would get away from the border.
    """
    height, width = hole.shape
    rows, columns = np.mgrid[0:height, 0:width]
    touched = {
        "top": hole[0].any(), "bottom": hole[-1].any(),
        "left": hole[:, 0].any(), "right": hole[:, -1].any(),
    }  # fmt: skip
    near = {
        "top": rows < BAND, "bottom": rows >= height - BAND,
        "left": columns < BAND, "right": columns >= width - BAND,
    }  # fmt: skip
    band = np.zeros_like(hole)
    for side, is_touched in touched.items():
        if is_touched:
            band |= near[side]
    band &= hole
    near_any = near["top"] | near["bottom"] | near["left"] | near["right"]
    inside = hole & ~near_any
    if band.sum() < 50 or inside.sum() < 50:
        return None
    error = filled.astype(np.float64) - truth.astype(np.float64)
    distance = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 5)
    band_bins = np.digitize(distance[band], DISTANCE_EDGES)
    inside_bins = np.digitize(distance[inside], DISTANCE_EDGES)
    weights = np.zeros(inside_bins.shape)
    for value in np.unique(band_bins):
        members = inside_bins == value
        if members.any():
            weights[members] = (band_bins == value).mean() / members.sum()
    matched = np.nan
    if weights.sum() > 0:
        matched = float(np.linalg.norm(np.average(error[inside], axis=0, weights=weights)))
    return (
        float(np.linalg.norm(error[band].mean(axis=0))),
        float(np.linalg.norm(error[inside].mean(axis=0))),
        matched,
    )


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
    """Rows of (band, inside, matched inside) casts over the first `photos` dev photos, each
    with a border-touching mask, and the median seconds one completion took."""
    masks = border_masks(shared_data("masks/nvidia-irregular"))
    rows, seconds = [], []
    for index, photo_path in enumerate(find_images(shared_data("dev/bsds500-val"))[:photos]):
        truth = np.asarray(Image.open(photo_path).convert("RGB"))
        mask = load_mask(masks[(index * 7) % len(masks)], *truth.shape[:2])  # spread over BINS
        started = time.perf_counter()
        filled = method(truth, mask)
        seconds.append(time.perf_counter() - started)
        scores = band_and_inside(filled, truth, mask > 0)
        if scores is not None:
            rows.append(scores)
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
    for name, reduce in (("mean", np.nanmean), ("median", np.nanmedian)):
        print(f"| {name} | " + " | ".join(f"{reduce(casts[:, k]):.1f}" for k in range(3)) + " |")
    over = [(casts[:, k] > 20).sum() for k in range(3)]
    print(f"| pairs over 20 | {over[0]} | {over[1]} | {over[2]} |")
    print(f"median completion time per pair: {seconds:.3f} s (the first includes warm-up)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
