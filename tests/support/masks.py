"""Masks built from rectangles."""

from __future__ import annotations

import numpy as np


def rect_mask(shape, *boxes, value=255) -> np.ndarray:
    mask = np.zeros(shape[:2], np.uint8)
    for y0, y1, x0, x1 in boxes:
        mask[y0:y1, x0:x1] = value
    return mask
