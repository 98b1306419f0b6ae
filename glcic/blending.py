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
#: The seed (inpainting method, radius) of a hole that touches a pinned edge. The solver takes
#: the seed as it is along that edge (the padding and the clone mask's eroded rim), so the fill
#: is pinned to it there. On 30 dev photos with border-touching masks (benchmarks/border_band.py)
#: Navier-Stokes at radius 2 instead of Telea's radius 1 lowered the default model's border band
#: from 14.8 to 10.5 (median 8.3 to 6.7; the inside at the band's distances 9.6 to 7.4), and on
#: 40 other pairs from 12.3 to 9.2, in the same time. Holes clear of the border keep Telea's
#: seed: a wider Telea there cost 1.3 % of hole L1 on the dev set (BENCHMARKS.md).
BORDER_SEED = (cv2.INPAINT_NS, 2)
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
    image_edges: tuple[bool, bool, bool, bool] = (True, True, True, True),
) -> np.ndarray:
    """Blend `network_fill` into `known` over `hole` (uint8 0/255); returns a new HxWx3 uint8.

    `known` is the original crop (hole pixels may hold anything); `network_fill` the crop with the
    network's output inside the hole; `border` one of `BORDER_BLENDS`; `mirror_depth` the
    deepest reflection past the edge in these pixels (`MIRROR_DEPTH` at the network's scale);
    `image_edges` which sides of the crop (top, bottom, left, right) are the image's own edges:
    only those are mirrored. Pixels outside the hole are returned unchanged.
    """
    if border not in BORDER_BLENDS:
        raise ValueError(f"border must be one of {', '.join(BORDER_BLENDS)}, got {border!r}")
    if min(hole.shape) < _MIN_SIDE:
        # OpenCV's solver needs a few pixels each way; a strip that thin has nothing to blend.
        return network_fill.copy()
    # Mirrored: the image edges the hole reaches, for models that ask for it; the rest pinned.
    touched = _touched_sides(hole)
    mirrored = tuple(
        border == "mirror" and edge and side
        for edge, side in zip(image_edges, touched, strict=True)
    )
    edge_parts, (top, bottom, left, right) = _mirrored_parts(hole, mirrored, mirror_depth)

    def pad(image: np.ndarray) -> np.ndarray:
        return cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_REFLECT_101)

    # The hole is reflected like the pixels: otherwise what lies under a hole at the image edge
    # (the object being removed) would be reflected into the padding as "known" colour.
    padded_known, padded_fill, padded_hole = pad(known), pad(network_fill), pad(hole)
    # The seed matters where the solver takes the destination's gradients: its rim inside the
    # hole (seamlessClone erodes the clone mask by 3 px) and the sides pinned at the image edge.
    if any(mirrored):  # the seed, mirrored: marching over the padding costs up to 9x the time
        seeded = pad(cv2.inpaint(known, hole, TELEA_RADIUS, cv2.INPAINT_TELEA))
    else:
        method, radius = BORDER_SEED if any(touched) else (cv2.INPAINT_TELEA, TELEA_RADIUS)
        seeded = cv2.inpaint(padded_known, padded_hole, radius, method)
    # The solver's boundary values come from the clone mask's outer ring: grow the mask so that
    # ring lies on known pixels, where the network fill and the original agree.
    grow = np.ones((2 * _GROW + 1, 2 * _GROW + 1), np.uint8)
    if any(mirrored):
        # Only the parts on a mirrored edge are mirrored into the mask: the mirror image of a part
        # that stops short of the edge would swallow the known strip between them.
        clone_mask = pad(cv2.dilate(edge_parts, grow))
        clone_mask[top : top + hole.shape[0], left : left + hole.shape[1]] = cv2.dilate(hole, grow)
    else:
        clone_mask = cv2.dilate(padded_hole, grow)
    # A pinned side: the mask stops at the crop's edge, whose boundary values are then the seed
    # in the padding. A mirrored side: the mask takes in the hole's mirror image, and only the
    # padding's outermost pixels (past the mirror image, or where `mirror_depth` cuts it) are.
    keep_top, keep_bottom, keep_left, keep_right = (1 if m else _PAD for m in mirrored)
    clone_mask[:keep_top, :] = 0
    clone_mask[clone_mask.shape[0] - keep_bottom :, :] = 0
    clone_mask[:, :keep_left] = 0
    clone_mask[:, clone_mask.shape[1] - keep_right :] = 0
    x, y, w, h = cv2.boundingRect(clone_mask)
    # seamlessClone centres the source's mask box on `centre`; this centre maps it onto itself.
    centre = (x + w // 2, y + h // 2)
    blended = cv2.seamlessClone(padded_fill, seeded, clone_mask, centre, cv2.NORMAL_CLONE)
    height, width = hole.shape
    result = known.copy()
    inside = hole > 0
    result[inside] = blended[top : top + height, left : left + width][inside]
    return result


def _touched_sides(hole: np.ndarray) -> tuple[bool, bool, bool, bool]:
    """(top, bottom, left, right): whether a hole pixel lies on that edge row or column. A hole
    that stops short of an edge, even by one pixel, keeps that strip as known boundary."""
    inside = hole > 0
    return (
        bool(inside[0].any()),
        bool(inside[-1].any()),
        bool(inside[:, 0].any()),
        bool(inside[:, -1].any()),
    )


def _mirrored_parts(
    hole: np.ndarray, mirrored: tuple[bool, ...], depth: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The hole parts touching a mirrored side (uint8 0/255), and the (top, bottom, left, right)
    padding: `_PAD` on pinned sides; on mirrored ones, room for those parts' mirror image plus a
    ring of known pixels beyond it, up to `depth` (and the crop's own size: one reflection)."""
    height, width = hole.shape
    sides = [_PAD] * 4
    parts = np.zeros_like(hole)
    if not any(mirrored):
        return parts, (_PAD, _PAD, _PAD, _PAD)
    count, labels, stats, _ = cv2.connectedComponentsWithStats((hole > 0).astype(np.uint8))
    reach = _GROW + 2  # the grown mask's extent past the part, plus the cleared outer ring
    for label in range(1, count):
        x, y, part_width, part_height = stats[label, :4]
        extents = (y + part_height, height - y, x + part_width, width - x)
        touching = (y == 0, y + part_height == height, x == 0, x + part_width == width)
        for side in range(4):
            if mirrored[side] and touching[side]:
                sides[side] = max(sides[side], extents[side] + reach)
                parts[labels == label] = 255
    depth = max(depth, _PAD)
    limits = (height - 1, height - 1, width - 1, width - 1)
    top, bottom, left, right = (
        min(size, depth, limit) if mirror else size
        for size, mirror, limit in zip(sides, mirrored, limits, strict=True)
    )
    return parts, (top, bottom, left, right)


def composite_soft(original: np.ndarray, fill: np.ndarray, selection: np.ndarray) -> np.ndarray:
    """original * (1 - a) + fill * a with a = selection / 255, rounded, in integer arithmetic.

    Where the selection is 0 the original comes back bit for bit; where it is 255, the fill.
    """
    alpha = selection.astype(np.uint32)[..., None]
    mixed = original.astype(np.uint32) * (255 - alpha) + fill.astype(np.uint32) * alpha
    return ((mixed + 127) // 255).astype(np.uint8)
