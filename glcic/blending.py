"""Post-processing from the paper: fast-marching fill, then Poisson blending of the network output.

As in the authors' release, the hole is first filled by Telea's fast-marching method and the
network output is then cloned into that image with OpenCV's Poisson solver (`seamlessClone`,
normal cloning): inside the hole the result keeps the network output's gradients, and its values
meet the surrounding pixels, so no seam shows even when the network's colours are off.

`seamlessClone` solves on the mask's bounding box with that box's border as boundary condition,
and it clears the outermost pixel ring of the mask; we pad the crop by reflection first, so the
solve never leaves the crop. Where a hole reaches the image edge there are no known pixels to
meet, and the model file says what to do there (`BORDER_BLENDS`).
"""

from __future__ import annotations

import cv2
import numpy as np

#: Telea's neighbourhood radius. The authors' code uses 1; the fill only seeds the Poisson solve.
TELEA_RADIUS = 1
_PAD = 4
_MIN_SIDE = 3
_GROW = 2
#: How far past the image edge the "mirror" blend reflects a hole, in the network's working
#: pixels; beyond it the solve is pinned to the mirrored fast-marching seed. On 30 dev photos with
#: border-touching 30-60 % masks (benchmarks/border_band.py) the border band's cast was 14.3 at
#: 16, 12.4 at 32, 12.2 at 64 and 12.9 unlimited, and unlimited costs up to 9x the solve's area
#: (a mask reaching all four edges): 0.6 s more for a 481x321 photo.
MIRROR_DEPTH = 64

#: How the blend treats the part of a hole that lies on the image edge, a property of the
#: weights (`ModelMetadata.border_blend`):
#: - "telea": the solve's values there are pinned to Telea's fast-marching fill. For networks
#:   whose raw output is poor at their input's edge (the paper's, trained with holes inside),
#:   whose colours there would otherwise run into the photo as a band.
#: - "mirror": the photo is mirrored across the edge, hole included, so the edge is a free
#:   boundary and the fill keeps its own gradients up to it. For networks trained to be blended
#:   that way (the `poisson-l1` loss, which blends exactly so): pinned to Telea's smear, their
#:   fill's colours bend toward it along the edge (BENCHMARKS.md, the border band).
BORDER_BLENDS = ("telea", "mirror")


def poisson_blend(
    known: np.ndarray,
    network_fill: np.ndarray,
    hole: np.ndarray,
    border: str = "telea",
    mirror_depth: int = MIRROR_DEPTH,
) -> np.ndarray:
    """Blend `network_fill` into `known` over `hole` (uint8 0/255); returns a new HxWx3 uint8.

    `known` is the original crop (hole pixels may hold anything); `network_fill` the crop with the
    network's output inside the hole; `border` one of `BORDER_BLENDS`; `mirror_depth` the
    deepest reflection past the edge in these pixels (`MIRROR_DEPTH` at the network's scale).
    Pixels outside the hole are returned unchanged.
    """
    if border not in BORDER_BLENDS:
        raise ValueError(f"border must be one of {', '.join(BORDER_BLENDS)}, got {border!r}")
    if min(hole.shape) < _MIN_SIDE:
        # OpenCV's solver needs a few pixels each way; a strip that thin has nothing to blend.
        return network_fill.copy()
    top, bottom, left, right = (
        _mirror_padding(hole, mirror_depth) if border == "mirror" else (_PAD,) * 4
    )

    def pad(image: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REFLECT_101)

    # The hole is reflected like the pixels: otherwise what lies under a hole at the image edge
    # (the object being removed) would be reflected into the padding as "known" colour.
    padded_known, padded_fill, padded_hole = pad(known), pad(network_fill), pad(hole)
    # The seed matters where the solver takes the destination's gradients: its rim inside the
    # hole (seamlessClone erodes the clone mask by 3 px) and, for "telea", the image edge.
    if border == "telea":
        seeded = cv2.inpaint(padded_known, padded_hole, TELEA_RADIUS, cv2.INPAINT_TELEA)
    else:  # the same seed, mirrored: marching over the padding would cost up to 9x the time
        seeded = pad(cv2.inpaint(known, hole, TELEA_RADIUS, cv2.INPAINT_TELEA))
    # The solver's boundary values come from the clone mask's outer ring: grow the mask so that
    # ring lies on known pixels, where the network fill and the original agree.
    clone_mask = cv2.dilate(padded_hole, np.ones((2 * _GROW + 1, 2 * _GROW + 1), np.uint8))
    # "telea": the mask stops at the image edge, whose boundary values are then the seeded
    # padding. "mirror": it takes in the hole's mirror image, and only the padding's outer ring
    # (beyond the mirrored hole, unless the hole spans the crop) is boundary.
    ring = _PAD if border == "telea" else 1
    clone_mask[:ring, :] = clone_mask[-ring:, :] = 0
    clone_mask[:, :ring] = clone_mask[:, -ring:] = 0
    x, y, w, h = cv2.boundingRect(clone_mask)
    # seamlessClone centres the source's mask box on `centre`; this centre maps it onto itself.
    centre = (x + w // 2, y + h // 2)
    blended = cv2.seamlessClone(padded_fill, seeded, clone_mask, centre, cv2.NORMAL_CLONE)
    height, width = hole.shape
    result = known.copy()
    inside = hole > 0
    result[inside] = blended[top : top + height, left : left + width][inside]
    return result


def _mirror_padding(hole: np.ndarray, depth: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) padding that holds the mirror image of every hole part reaching
    an edge (within the mask's growth), with a ring of known pixels beyond it, up to `depth`."""
    height, width = hole.shape
    count, _, stats, _ = cv2.connectedComponentsWithStats((hole > 0).astype(np.uint8))
    top = bottom = left = right = _PAD
    reach = _GROW + 2  # the grown mask's extent past the part, plus the cleared outer ring
    for x, y, part_width, part_height, _ in stats[1:count]:
        if y <= _GROW:
            top = max(top, y + part_height + reach)
        if y + part_height >= height - _GROW:
            bottom = max(bottom, height - y + reach)
        if x <= _GROW:
            left = max(left, x + part_width + reach)
        if x + part_width >= width - _GROW:
            right = max(right, width - x + reach)
    # Reflection cannot reach farther than the crop itself.
    depth = max(depth, _PAD)
    vertical, horizontal = min(depth, height - 1), min(depth, width - 1)
    return min(top, vertical), min(bottom, vertical), min(left, horizontal), min(right, horizontal)


def composite_soft(original: np.ndarray, fill: np.ndarray, selection: np.ndarray) -> np.ndarray:
    """original * (1 - a) + fill * a with a = selection / 255, rounded, in integer arithmetic.

    Where the selection is 0 the original comes back bit for bit; where it is 255, the fill.
    """
    alpha = selection.astype(np.uint32)[..., None]
    mixed = original.astype(np.uint32) * (255 - alpha) + fill.astype(np.uint32) * alpha
    return ((mixed + 127) // 255).astype(np.uint8)
