"""Sample montage and scores of a model on photos we may ship, with holes we draw ourselves.

The development set (BSDS500) and NVIDIA's masks carry research-only terms and stay out of the
repository, so the model card's pictures come from here instead: the public-domain and CC0
photos under examples/, each paired with one seeded free-form mask per hole-ratio bin, scored
and rendered by `glcic-eval` itself (the same pairing rule, metrics and montage as the dev set),
in float32 so that the card's numbers do not depend on the CPU.

    python recipes/sample_montage.py --model glcic/models/default.safetensors --out DIR
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from glcic.training.eval_cli import main as glcic_eval
from glcic.training.pairing import BIN_LABELS, MASK_NUMBERS_PER_BIN

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PHOTOS = [EXAMPLES / "rocket.jpg", *sorted((EXAMPLES / "gallery").glob("*.jpg"))]
MASK_SIDE = 512
MASKS_PER_BIN = 4
SEED = 2017


def stroke_mask(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A 512x512 mask of random thick polylines covering a ratio in [low, high)."""
    while True:
        mask = np.zeros((MASK_SIDE, MASK_SIDE), np.uint8)
        target = rng.uniform(low, high)
        while np.count_nonzero(mask) / mask.size < target:
            thickness = int(rng.integers(8, 48))
            point = rng.uniform(0, MASK_SIDE, size=2)
            for _ in range(int(rng.integers(2, 6))):
                angle = rng.uniform(0, 2 * np.pi)
                step = rng.uniform(40, 160) * np.array([np.cos(angle), np.sin(angle)])
                after = np.clip(point + step, 0, MASK_SIDE - 1)
                start, end = tuple(int(v) for v in point), tuple(int(v) for v in after)
                cv2.line(mask, start, end, 255, thickness)
                point = after
        if low <= np.count_nonzero(mask) / mask.size < high:
            return mask


def write_inputs(folder: Path) -> tuple[Path, Path]:
    """Links to the photos and the seeded masks, named in glcic-eval's bin numbering."""
    images, masks = folder / "images", folder / "masks"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for photo in PHOTOS:
        link = images / photo.name
        if not link.exists():
            link.symlink_to(photo)
    rng = np.random.default_rng(SEED)
    for bin_index in range(len(BIN_LABELS)):
        low, high = max(0.02, bin_index / 10), (bin_index + 1) / 10
        for k in range(MASKS_PER_BIN):
            number = bin_index * MASK_NUMBERS_PER_BIN + k
            cv2.imwrite(str(masks / f"{number:05d}.png"), stroke_mask(rng, low, high))
    return images, masks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    images, masks = write_inputs(args.out)
    return glcic_eval(
        ["--images", str(images), "--masks", str(masks), "--model", str(args.model),
         "--baseline", "telea,ns", "--precision", "float32", "--out", str(args.out)]
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
