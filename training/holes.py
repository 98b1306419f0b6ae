"""Training holes: the paper's random rectangles, and free-form brush strokes.

Both live inside a local patch (the region the local discriminator sees), so the discriminator
always judges the completed area. Free-form strokes are random thick polylines, the kind of hole
the authors' later free-form model was trained with and what users' selections and the
evaluation masks look like. A share of holes can be pushed flush against the crop's edges
(`edge_fraction`): otherwise the network never sees a hole that runs into its zero padding, and
it paints a colour band along the image border where users' selections reach it. Every draw
comes from the generator passed in, so holes are seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class HoleSample:
    mask: np.ndarray  # HxW uint8, 1 = hole
    hole_box: tuple[int, int]  # (x, y) of the local patch that holds the hole
    real_box: tuple[int, int]  # (x, y) of a random local patch, for real images


def rectangle_hole(
    rng: np.random.Generator, local_size: int, hole_min: int, hole_max: int
) -> np.ndarray:
    """A local_size^2 patch with one axis-aligned rectangle, sides in [hole_min, hole_max]."""
    patch = np.zeros((local_size, local_size), np.uint8)
    width, height = (int(v) for v in rng.integers(hole_min, hole_max + 1, size=2))
    x = int(rng.integers(0, local_size - width + 1))
    y = int(rng.integers(0, local_size - height + 1))
    patch[y : y + height, x : x + width] = 1
    return patch


def freeform_hole(
    rng: np.random.Generator, local_size: int, hole_min: int, hole_max: int
) -> np.ndarray:
    """A local_size^2 patch with 1-4 random thick polylines, spanning about hole_min..hole_max."""
    patch = np.zeros((local_size, local_size), np.uint8)
    span = int(rng.integers(hole_min, hole_max + 1))
    offset = (local_size - span) // 2
    for _ in range(int(rng.integers(1, 5))):
        thickness = int(rng.integers(max(2, span // 12), max(3, span // 4) + 1))
        point = rng.uniform(0, span, size=2)
        for _ in range(int(rng.integers(2, 7))):
            angle = rng.uniform(0, 2 * np.pi)
            length = rng.uniform(span / 6, span / 2)
            nxt = np.clip(point + length * np.array([np.cos(angle), np.sin(angle)]), 0, span - 1)
            start = tuple(int(v) + offset for v in point)
            end = tuple(int(v) + offset for v in nxt)
            cv2.line(patch, start, end, 1, thickness)
            cv2.circle(patch, end, thickness // 2, 1, -1)
            point = nxt
    return patch


#: (horizontal, vertical) pushes of an edge hole: -1 toward left/top, 1 toward right/bottom,
#: 0 none; the four sides and the four corners, equally often.
_EDGE_PUSHES = tuple((dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy)


def sample_hole(
    rng: np.random.Generator,
    image_size: int,
    local_size: int,
    hole_min: int,
    hole_max: int,
    freeform_fraction: float,
    edge_fraction: float = 0.0,
) -> HoleSample:
    """One training hole in an image_size^2 crop, with its local patch and a random real patch.

    With probability `edge_fraction` the hole is moved, inside its patch and with its patch,
    until it touches one side or a corner of the crop. (No draw is made when it is 0, so runs
    without edge holes keep their random stream.)
    """
    limit = image_size - local_size
    hole_box = (int(rng.integers(0, limit + 1)), int(rng.integers(0, limit + 1)))
    real_box = (int(rng.integers(0, limit + 1)), int(rng.integers(0, limit + 1)))
    use_freeform = rng.random() < freeform_fraction
    draw = freeform_hole if use_freeform else rectangle_hole
    patch = draw(rng, local_size, hole_min, hole_max)
    if edge_fraction > 0 and rng.random() < edge_fraction:
        push = _EDGE_PUSHES[int(rng.integers(len(_EDGE_PUSHES)))]
        patch, hole_box = _push_to_edge(patch, hole_box, push, limit)
    mask = np.zeros((image_size, image_size), np.uint8)
    x, y = hole_box
    mask[y : y + local_size, x : x + local_size] = patch
    return HoleSample(mask, hole_box, real_box)


def _push_to_edge(
    patch: np.ndarray, corner: tuple[int, int], push: tuple[int, int], limit: int
) -> tuple[np.ndarray, tuple[int, int]]:
    """Shift the hole inside its patch, and the patch inside the crop, so the hole touches the
    crop's side(s) that `push` names; the patch still holds the whole hole."""
    rows, columns = np.nonzero(patch)
    size = patch.shape[0]
    position = list(corner)
    for axis, (direction, used) in enumerate(zip(push, (columns, rows), strict=True)):
        if direction == 0:
            continue
        # Rolling moves only empty lines around the patch: the hole lies in [min, max].
        shift = -int(used.min()) if direction < 0 else size - 1 - int(used.max())
        patch = np.roll(patch, shift, axis=1 - axis)
        position[axis] = 0 if direction < 0 else limit
    return patch, (position[0], position[1])
