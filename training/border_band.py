"""The border band of issue 15: colour cast along an image edge a hole runs into.

A fill's cast over a set of pixels is the length of its mean colour error vector (fill minus
truth, RGB, 0-255): a fill too pink by 10 levels in red and blue has a cast of 14, whatever its
texture. The band is the hole within `BAND` px of an edge the hole touches; it is compared with
the hole's inside weighed to the band's distances from known pixels. Shared by
`benchmarks/border_band.py` and the shipped model's regression test.

A cast splits into two parts that add in quadrature: its component along the grey axis
(1, 1, 1), a brightness error, and the rest, a change of hue (`split_cast`). Photos darken toward
their edges (the dev photos' outer 2 px are 7.5 grey levels darker than their pixels 16-32 px
in), which no fill continued from the inside knows, so the band's brightness error says less
about a fill than its hue error does: the pink and blue band issue 15 reported was hue.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

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


def split_cast(error: np.ndarray) -> tuple[float, float]:
    """(brightness, hue) parts of a mean RGB error vector: the lengths of its projection on the
    grey axis and of the remainder, so that cast**2 == brightness**2 + hue**2."""
    grey = float(np.mean(error))
    return abs(grey) * float(np.sqrt(3.0)), float(np.linalg.norm(error - grey))


def band_and_inside(
    filled: np.ndarray, truth: np.ndarray, hole: np.ndarray
) -> tuple[float, float, float] | None:
    """(band cast, inside cast, distance-matched inside cast) for one pair, or None if the hole
    misses the border or has too little inside."""
    errors = band_and_inside_errors(filled, truth, hole)
    if errors is None:
        return None
    band, inside, matched = (float(np.linalg.norm(error)) for error in errors)
    return band, inside, matched


def band_and_inside_errors(
    filled: np.ndarray, truth: np.ndarray, hole: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The mean RGB error vectors (fill minus truth, 0-255) over the band, the inside, and the
    inside weighed to the band's distances (NaN where no inside pixel has them), or None if the
    hole misses the border or has too little inside.

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
    matched = np.full(3, np.nan)
    if weights.sum() > 0:
        matched = np.average(error[inside], axis=0, weights=weights)
    return error[band].mean(axis=0), error[inside].mean(axis=0), matched
