"""Where to compute: holes found in the mask, grouped, and given a crop with context each.

Everything here works on the mask's bounding box or on small boxes, never on full-image float
arrays, so time and memory follow the holes rather than the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from glcic.networks import SIDE_MULTIPLE

#: Connected-component labelling runs on at most this many pixels; larger hole areas are
#: labelled on a block-max-pooled grid (holes closer than a block merge, which they would anyway).
_MAX_LABEL_PIXELS = 4_000_000


@dataclass(frozen=True)
class Box:
    """A half-open pixel rectangle [x0, x1) x [y0, y1) in image coordinates."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def grown(self, amount: int) -> Box:
        return Box(self.x0 - amount, self.y0 - amount, self.x1 + amount, self.y1 + amount)

    def union(self, other: Box) -> Box:
        return Box(
            min(self.x0, other.x0),
            min(self.y0, other.y0),
            max(self.x1, other.x1),
            max(self.y1, other.y1),
        )

    def overlaps(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )

    def offset(self, dx: int, dy: int) -> Box:
        return Box(self.x0 + dx, self.y0 + dy, self.x1 + dx, self.y1 + dy)


@dataclass(frozen=True)
class HoleGroup:
    """Holes completed together: their joint box and their thickness.

    Thickness is twice the largest distance from a hole pixel to a known pixel: how much the
    network must invent. A 96x128 rectangle is 96 thick; a long 10-pixel stroke is 10 thick.
    """

    box: Box
    thickness: int


@dataclass(frozen=True)
class CropPlan:
    """One network run: the image region it reads, and the resolution it works at."""

    group: HoleGroup
    crop: Box  # image region fed to the network (context included), inside the image
    scale: float  # working pixels per image pixel (<= 1)
    working_size: tuple[int, int]  # (height, width) after scaling, before padding
    padded_size: tuple[int, int]  # (height, width), multiples of 4


def find_hole_groups(mask: np.ndarray, merge_distance: int) -> list[HoleGroup]:
    """Connected holes (8-connectivity) of `mask > 0`; holes closer than `merge_distance` merge."""
    x, y, w, h = cv2.boundingRect(mask)
    if w == 0 or h == 0:
        return []
    region = mask[y : y + h, x : x + w]
    block = max(1, math.ceil(math.sqrt(w * h / _MAX_LABEL_PIXELS)))
    if block > 1:
        region = _block_max(region, block)
    count, _, stats, _ = cv2.connectedComponentsWithStats(
        (region > 0).view(np.uint8), connectivity=8, ltype=cv2.CV_32S
    )
    groups = []
    for label in range(1, count):
        bx, by, bw, bh = (int(v) for v in stats[label, :4])
        box = Box(bx * block, by * block, min((bx + bw) * block, w), min((by + bh) * block, h))
        if block > 1:  # tighten the block-aligned box to the hole pixels inside it
            tx, ty, tw, th = cv2.boundingRect(np.ascontiguousarray(mask[box.offset(x, y).slices]))
            box = Box(box.x0 + tx, box.y0 + ty, box.x0 + tx + tw, box.y0 + ty + th)
        groups.append(HoleGroup(box.offset(x, y), 0))
    merged = _merge_close(groups, merge_distance)
    return [HoleGroup(g.box, hole_thickness(mask[g.box.slices])) for g in merged]


def hole_thickness(region: np.ndarray) -> int:
    """Twice the largest distance from a hole pixel (> 0) to a known pixel, the region's edge
    counting as known; computed on a subsampled grid when the region is huge."""
    step = max(1, math.ceil(math.sqrt(region.size / _MAX_LABEL_PIXELS)))
    sampled = region[::step, ::step] if step > 1 else region
    padded = cv2.copyMakeBorder(
        (sampled > 0).view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0
    )
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return max(1, round(2 * float(distance.max()) * step))


def _block_max(region: np.ndarray, block: int) -> np.ndarray:
    """Max over block x block tiles (edges padded), without a full-size temporary."""
    h, w = region.shape
    out_h, out_w = math.ceil(h / block), math.ceil(w / block)
    out = np.zeros((out_h, out_w), dtype=np.uint8)
    for row in range(out_h):
        band = region[row * block : (row + 1) * block]
        np.maximum.reduceat(band.max(axis=0), np.arange(0, w, block), out=out[row])
    return out


def _merge_close(groups: list[HoleGroup], distance: int) -> list[HoleGroup]:
    """Union groups whose boxes come within `distance` pixels, until none do."""
    half = max(0, distance) // 2
    merged = True
    while merged:
        merged = False
        result: list[HoleGroup] = []
        for group in groups:
            for index, other in enumerate(result):
                if group.box.grown(half).overlaps(other.box.grown(half + distance % 2)):
                    result[index] = HoleGroup(other.box.union(group.box), 0)
                    merged = True
                    break
            else:
                result.append(group)
        groups = result
    return sorted(groups, key=lambda g: (g.box.y0, g.box.x0))


def plan_crop(
    group: HoleGroup,
    image_size: tuple[int, int],
    max_hole_side: int,
    margin: int,
    max_working_side: int,
) -> CropPlan:
    """Choose the scale and the context crop for one group of holes.

    The scale shrinks the group's thickness to the hole sizes the model was trained on, and
    further if the crop (hole box plus `margin` working pixels each side) would exceed
    `max_working_side`.
    The crop is shifted inward at image edges so the margin is real pixels wherever it can be.
    """
    height, width = image_size
    box = group.box
    scale = min(1.0, max_hole_side / max(1, group.thickness))
    # Kept one SIDE_MULTIPLE clear of the limit: rounding the context up (below) adds up to
    # 2.5 working pixels, and padding rounds up to a multiple of SIDE_MULTIPLE.
    room = max_working_side // SIDE_MULTIPLE * SIDE_MULTIPLE - 2 * margin - SIDE_MULTIPLE
    if room < SIDE_MULTIPLE:
        raise ValueError(f"max_working_side {max_working_side} leaves no room for margin {margin}")
    scale = min(scale, room / max(box.width, box.height))
    context = math.ceil(margin / scale)
    crop_w = min(width, box.width + 2 * context)
    crop_h = min(height, box.height + 2 * context)
    x0 = _place(box.x0 - context, crop_w, width)
    y0 = _place(box.y0 - context, crop_h, height)
    crop = Box(x0, y0, x0 + crop_w, y0 + crop_h)
    if scale >= 1.0:
        working = (crop_h, crop_w)
    else:
        working = (max(1, round(crop_h * scale)), max(1, round(crop_w * scale)))
    padded = (_round_up(working[0]), _round_up(working[1]))
    return CropPlan(group, crop, scale, working, padded)


def _place(start: int, length: int, limit: int) -> int:
    """Shift [start, start + length) inward so it lies within [0, limit)."""
    return max(0, min(start, limit - length))


def _round_up(value: int) -> int:
    return -(-value // SIDE_MULTIPLE) * SIDE_MULTIPLE
