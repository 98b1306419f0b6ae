"""Is a fill's detail the photo's texture or a pattern the network lays over it?

The detail ratio (`glcic-eval`) counts any gradient as texture. Under the adversarial term a
small network can raise it with a regular 2- or 4-pixel weave (the transposed convolutions'
checkerboard) rather than with the photo's own texture. This separates the two on real
photos and masks, completed as users get them (Poisson blend):

- sobel: the detail ratio, fill over truth, inside the hole eroded by 2 px (ratio of means);
- mixed k: the same ratio for the mixed second difference at lag k
  (`glcic.training.metrics.hole_checker`), which a checkerboard of period 2k drives up while
  blur, ramps and straight edges cancel in it (k = 1: a 2-px checkerboard, which Sobel's central
  difference cannot see at all; k = 2: a 4-px weave, which it can);
- weave k = mixed k / sobel: how much of the fill's detail sits in that pattern compared with
  the photo's. A model whose detail rises with its weave is drawing a pattern, not texture.

Pairs: the first `--photos` dev photos, each with its evaluation-rule mask of the 30-60 % bins
(large holes, where a pattern shows).

    python benchmarks/fill_texture.py [--model default] [--model telea] [--model FILE ...]
        [--photos 12] [--precision float32]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from network_speed import cpu_name  # noqa: E402  (same folder: the scripts run as files)
from support.data import shared_data  # noqa: E402

from glcic.model_file import load_model  # noqa: E402
from glcic.model_names import resolve_model  # noqa: E402
from glcic.precision import PRECISIONS  # noqa: E402
from glcic.training.evaluate import BASELINES, Method, baseline_method, model_method  # noqa: E402
from glcic.training.metrics import detail_ratio, hole_checker, hole_gradient  # noqa: E402
from glcic.training.pairing import find_images, find_masks, load_mask  # noqa: E402

#: Hole-ratio bins used (30-40, 40-50, 50-60 %).
BINS = (3, 4, 5)
LAGS = (1, 2)


def fill_over_truth(method: Method, photos: int) -> list[float]:
    """Detail ratio, then the checker ratio per lag: fills over photos, ratios of means."""
    masks = find_masks(shared_data("masks/nvidia-irregular"))
    fills: list[list[float]] = [[] for _ in range(1 + len(LAGS))]
    truths: list[list[float]] = [[] for _ in range(1 + len(LAGS))]
    for index, path in enumerate(find_images(shared_data("dev/bsds500-val"))[:photos]):
        truth = np.asarray(Image.open(path).convert("RGB"))
        for bin_index in BINS:
            candidates = masks[bin_index]
            mask = load_mask(candidates[index % len(candidates)], *truth.shape[:2])
            filled = method(truth, mask)
            for image, values in ((filled, fills), (truth, truths)):
                values[0].append(hole_gradient(image, mask))
                for row, lag in enumerate(LAGS, start=1):
                    values[row].append(hole_checker(image, mask, lag))
    # Every ratio over the same pairs: a pair where any measure is undefined (a hole too thin
    # for the erosion, or left only in the image's last row) is dropped from all of them.
    fill_rows, truth_rows = np.array(fills), np.array(truths)
    defined = np.isfinite(fill_rows).all(axis=0) & np.isfinite(truth_rows).all(axis=0)
    return [
        detail_ratio(fill_row[defined], truth_row[defined])
        for fill_row, truth_row in zip(fill_rows, truth_rows, strict=True)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", help="default, a name, a file, telea or ns")
    parser.add_argument("--photos", type=int, default=12)
    parser.add_argument("--precision", choices=PRECISIONS, default="float32")
    args = parser.parse_args()
    print(f"# fill texture, {args.photos} dev photos x bins 30-60 %, {cpu_name()}, "
          f"precision {args.precision}")  # fmt: skip
    print("| fill | sobel | mixed 1 | mixed 2 | weave 1 | weave 2 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.model or ["default", "telea", "ns"]:
        if name in BASELINES:
            method = baseline_method(name)
        else:
            method = model_method(load_model(resolve_model(name), precision=args.precision))
        sobel, *mixed = fill_over_truth(method, args.photos)
        weaves = [value / sobel if sobel > 0 else float("nan") for value in mixed]
        print(f"| {Path(name).name} | {sobel:.3f} | "
              + " | ".join(f"{value:.3f}" for value in mixed) + " | "
              + " | ".join(f"{value:.2f}" for value in weaves) + " |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
