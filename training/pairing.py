"""Which photo is evaluated with which hole: fixed rules, named in every result.

See the rules in `glcic.training.evaluate`'s docstring and docs/evaluation.md.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from glcic.errors import GlcicError
from glcic.image_io import read_mask
from glcic.training.data import IMAGE_SUFFIXES
from glcic.training.data import find_images as find_training_images

BIN_LABELS = ("1-10%", "10-20%", "20-30%", "30-40%", "40-50%", "50-60%")
#: NVIDIA's test masks are numbered in blocks of 2000 per hole-ratio bin.
MASK_NUMBERS_PER_BIN = 2000
MASK_PAIRING = "nvidia-irregular-by-bin-v1"
BOX_PAIRING = "seeded-boxes-v1"
BOX_SIDES = (64, 128)
BOX_SEED = 2017


class EvaluationError(GlcicError):
    """The evaluation cannot run as asked (no images, no masks, no methods, bad options)."""


_MASK_NAME = re.compile(r"^(\d{5})\.png$", re.IGNORECASE)


def find_images(directory: Path) -> list[Path]:
    """Image files under `directory` (recursive), sorted by path: the pairing's order.

    The same search as the training data's, so a folder evaluates as it trains.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise EvaluationError(f"{directory}: no such folder of images")
    found = find_training_images([directory])
    if not found:
        raise EvaluationError(
            f"{directory}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return found


def find_masks(directory: Path) -> dict[int, list[Path]]:
    """NNNNN.png mask files in `directory` grouped by bin (number // 2000), sorted by number."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EvaluationError(f"{directory}: no such folder of masks")
    numbered: list[tuple[int, str, Path]] = []
    for path in directory.iterdir():
        match = _MASK_NAME.match(path.name)
        if match is None or not path.is_file():
            continue
        number = int(match.group(1))
        if number // MASK_NUMBERS_PER_BIN < len(BIN_LABELS):
            numbered.append((number, path.name, path))
    if not numbered:
        raise EvaluationError(
            f"{directory}: no mask files named NNNNN.png (00000-11999, NVIDIA irregular masks)"
        )
    bins: dict[int, list[Path]] = {}
    for number, _, path in sorted(numbered):
        bins.setdefault(number // MASK_NUMBERS_PER_BIN, []).append(path)
    return dict(sorted(bins.items()))


@dataclass(frozen=True)
class MaskAssignment:
    """One (image, mask) pair of the mask pairing rule."""

    image_index: int
    bin: int
    mask: Path


def pair_masks(
    image_count: int, masks_by_bin: Mapping[int, Sequence[Path]]
) -> list[MaskAssignment]:
    """Image i gets the (i mod n_b)-th mask of every bin b, bins in ascending order."""
    return [
        MaskAssignment(index, bin_index, masks[index % len(masks)])
        for index in range(image_count)
        for bin_index, masks in sorted(masks_by_bin.items())
        if masks
    ]


def box_for(index: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of image `index`'s rectangular hole.

    Seeded by the index alone, so every method and every rerun sees the same hole.
    """
    rng = np.random.default_rng([BOX_SEED, index])
    drawn_w, drawn_h = (int(v) for v in rng.integers(BOX_SIDES[0], BOX_SIDES[1] + 1, size=2))
    box_w = min(drawn_w, width // 2)
    box_h = min(drawn_h, height // 2)
    x = int(rng.integers(0, width - box_w + 1))
    y = int(rng.integers(0, height - box_h + 1))
    return x, y, box_w, box_h


def ratio_bin(hole_pixels: int, total_pixels: int) -> int:
    """Bin of a hole ratio, in exact integer arithmetic: floor(10 x ratio), clamped to 0..5."""
    return min(len(BIN_LABELS) - 1, (10 * hole_pixels) // max(1, total_pixels))


def load_mask(path: Path, height: int, width: int) -> np.ndarray:
    """The mask resized (nearest neighbour) to height x width, as 0 / 255."""
    mask = read_mask(path)
    if mask.shape != (height, width):
        mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.where(mask > 127, np.uint8(255), np.uint8(0))
