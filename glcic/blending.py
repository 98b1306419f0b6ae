"""Post-processing from the paper: fast-marching fill, then Poisson blending of the network output.

As in the authors' release, the hole is first filled by Telea's fast-marching method and the
network output is then cloned into that image with OpenCV's Poisson solver (`seamlessClone`,
normal cloning): inside the hole the result keeps the network output's gradients, and its values
meet the surrounding pixels, so no seam shows even when the network's colours are off.

`seamlessClone` solves on the mask's bounding box with that box's border as boundary condition,
and it clears the outermost pixel ring of the mask; we pad the crop by reflection first, so a
hole touching the image edge is blended like any other and the solve never leaves the crop.
"""

from __future__ import annotations

import cv2
import numpy as np

#: Telea's neighbourhood radius. The authors' code uses 1; the fill only seeds the Poisson solve.
TELEA_RADIUS = 1
_PAD = 4
_MIN_SIDE = 3
_GROW = 2


def poisson_blend(known: np.ndarray, network_fill: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Blend `network_fill` into `known` over `hole` (uint8 0/255); returns a new HxWx3 uint8.

    `known` is the original crop (hole pixels may hold anything); `network_fill` the crop with the
    network's output inside the hole. Pixels outside the hole are returned unchanged.
    """
    if min(hole.shape) < _MIN_SIDE:
        # OpenCV's solver needs a few pixels each way; a strip that thin has nothing to blend.
        return network_fill.copy()
    padded_known = cv2.copyMakeBorder(known, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_REFLECT_101)
    padded_fill = cv2.copyMakeBorder(network_fill, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_REFLECT_101)
    # The hole is reflected like the pixels: otherwise what lies under a hole at the image edge
    # (the object being removed) would be reflected into the padding as "known" colour.
    padded_hole = cv2.copyMakeBorder(hole, _PAD, _PAD, _PAD, _PAD, cv2.BORDER_REFLECT_101)
    seeded = cv2.inpaint(padded_known, padded_hole, TELEA_RADIUS, cv2.INPAINT_TELEA)
    # The solver's boundary values come from the clone mask's outer ring: grow the mask so that
    # ring lies on known pixels, where the network fill and the original agree.
    clone_mask = cv2.dilate(padded_hole, np.ones((2 * _GROW + 1, 2 * _GROW + 1), np.uint8))
    clone_mask[:_PAD, :] = clone_mask[-_PAD:, :] = 0
    clone_mask[:, :_PAD] = clone_mask[:, -_PAD:] = 0
    x, y, w, h = cv2.boundingRect(clone_mask)
    # seamlessClone centres the source's mask box on `centre`; this centre maps it onto itself.
    centre = (x + w // 2, y + h // 2)
    blended = cv2.seamlessClone(padded_fill, seeded, clone_mask, centre, cv2.NORMAL_CLONE)
    result = known.copy()
    inside = hole > 0
    result[inside] = blended[_PAD:-_PAD, _PAD:-_PAD][inside]
    return result


def composite_soft(original: np.ndarray, fill: np.ndarray, selection: np.ndarray) -> np.ndarray:
    """original * (1 - a) + fill * a with a = selection / 255, rounded, in integer arithmetic.

    Where the selection is 0 the original comes back bit for bit; where it is 255, the fill.
    """
    alpha = selection.astype(np.uint32)[..., None]
    mixed = original.astype(np.uint32) * (255 - alpha) + fill.astype(np.uint32) * alpha
    return ((mixed + 127) // 255).astype(np.uint8)
