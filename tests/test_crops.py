"""Crop planning (glcic/crops.py): holes found in the mask, grouped, and given a crop each."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from support.masks import rect_mask

from glcic.crops import Box, HoleGroup, find_hole_groups, hole_thickness, plan_crop


def test_close_holes_merge_into_one_group() -> None:
    mask = rect_mask((240, 320), (10, 20, 10, 20), (10, 20, 30, 40), (200, 210, 300, 310))
    groups = find_hole_groups(mask, merge_distance=32)
    assert len(groups) == 2
    assert (groups[0].box.x0, groups[0].box.x1) == (10, 40)


def test_separate_holes_are_separate_groups_in_reading_order() -> None:
    mask = rect_mask((240, 320), (100, 196, 20, 148), (10, 20, 250, 260))
    groups = find_hole_groups(mask, merge_distance=32)
    assert groups == [
        HoleGroup(Box(250, 10, 260, 20), thickness=10),
        HoleGroup(Box(20, 100, 148, 196), thickness=96),
    ]


def test_holes_touching_at_a_corner_are_one_hole() -> None:
    mask = rect_mask((40, 40), (5, 10, 5, 10), (10, 15, 10, 15))  # 8-connected, not 4-connected
    assert find_hole_groups(mask, merge_distance=0) == [HoleGroup(Box(5, 5, 15, 15), thickness=6)]


def test_an_empty_mask_has_no_groups() -> None:
    assert find_hole_groups(np.zeros((50, 60), np.uint8), merge_distance=32) == []


@pytest.mark.parametrize(("gap", "count"), [(31, 1), (32, 2)])
def test_holes_merge_when_closer_than_the_merge_distance(gap, count) -> None:
    mask = rect_mask((100, 200), (10, 20, 10, 20), (10, 20, 20 + gap, 30 + gap))
    groups = find_hole_groups(mask, merge_distance=32)
    assert len(groups) == count
    if count == 1:
        assert groups[0].box == Box(10, 10, 30 + gap, 20)


def test_boxes_stay_exact_when_a_huge_mask_is_labelled_coarsely() -> None:
    """Over 4 million pixels the holes are labelled on a pooled grid; the boxes must not be."""
    mask = rect_mask(
        (2100, 2100), (5, 12, 7, 20), (1001, 1003, 1001, 1004), (2090, 2095, 2080, 2099)
    )
    boxes = [group.box for group in find_hole_groups(mask, merge_distance=32)]
    assert boxes == [Box(7, 5, 20, 12), Box(1001, 1001, 1004, 1003), Box(2080, 2090, 2099, 2095)]


def test_thickness_is_the_narrow_side_not_the_length() -> None:
    assert hole_thickness(np.full((96, 128), 255, np.uint8)) == 96
    stroke = np.zeros((240, 320), np.uint8)
    cv2.line(stroke, (10, 200), (300, 40), 255, 10)
    (group,) = find_hole_groups(stroke, merge_distance=32)
    assert 9 <= group.thickness <= 12
    assert group.box.width > 250


def _assert_inside_with_hole(plan, image_size) -> None:
    height, width = image_size
    hole, crop = plan.group.box, plan.crop
    assert 0 <= crop.x0 <= hole.x0 and hole.x1 <= crop.x1 <= width
    assert 0 <= crop.y0 <= hole.y0 and hole.y1 <= crop.y1 <= height


def test_crop_is_the_hole_plus_the_margin_at_full_resolution() -> None:
    group = HoleGroup(Box(100, 80, 140, 120), thickness=40)
    plan = plan_crop(group, (240, 320), max_hole_side=64, margin=32, max_working_side=256)
    assert plan.scale == 1.0
    assert plan.crop == group.box.grown(32)
    assert plan.working_size == (104, 104) == plan.padded_size


@pytest.mark.parametrize(
    ("hole", "crop"),
    [
        (Box(0, 0, 30, 20), Box(0, 0, 94, 84)),  # top left: the margin it lacks goes below, right
        (Box(290, 220, 320, 240), Box(226, 156, 320, 240)),  # bottom right: above, left
    ],
)
def test_crop_at_the_image_edge_shifts_inward_and_keeps_its_context(hole, crop) -> None:
    group = HoleGroup(hole, thickness=20)
    plan = plan_crop(group, (240, 320), max_hole_side=64, margin=32, max_working_side=256)
    _assert_inside_with_hole(plan, (240, 320))
    assert plan.crop == crop  # as large as the hole plus the margin each side
    assert plan.working_size == (84, 94)
    assert plan.padded_size == (84, 96)  # padded up to a multiple of 4


def test_hole_thicker_than_trained_is_scaled_to_the_trained_size() -> None:
    group = HoleGroup(Box(400, 300, 520, 420), thickness=120)
    plan = plan_crop(group, (1000, 1200), max_hole_side=32, margin=32, max_working_side=256)
    assert plan.scale == pytest.approx(32 / 120)
    _assert_inside_with_hole(plan, (1000, 1200))
    hole, crop = group.box, plan.crop
    for context in (hole.x0 - crop.x0, crop.x1 - hole.x1, hole.y0 - crop.y0, crop.y1 - hole.y1):
        assert context * plan.scale >= 32  # the margin, counted in working pixels
    assert plan.working_size == (round(crop.height * plan.scale), round(crop.width * plan.scale))
    for padded, working in zip(plan.padded_size, plan.working_size, strict=True):
        assert padded % 4 == 0 and working <= padded < working + 4


def test_thin_holes_keep_full_resolution_whatever_the_trained_size() -> None:
    group = HoleGroup(Box(50, 50, 60, 60), thickness=10)
    plan = plan_crop(group, (240, 320), max_hole_side=32, margin=32, max_working_side=256)
    assert plan.scale == 1.0


def test_a_long_hole_is_scaled_to_fit_the_working_side() -> None:
    group = HoleGroup(Box(10, 10, 210, 30), thickness=20)
    plan = plan_crop(group, (240, 320), max_hole_side=64, margin=32, max_working_side=200)
    assert plan.scale == pytest.approx((200 - 2 * 32 - 4) / 200)
    assert max(plan.padded_size) <= 200
    _assert_inside_with_hole(plan, (240, 320))


@pytest.mark.parametrize("length", [700, 907, 1500, 3001])
@pytest.mark.parametrize("max_working_side", [1024, 1023, 500])
def test_no_crop_exceeds_the_working_side_after_rounding(length, max_working_side) -> None:
    """Rounding the context up and padding to a multiple of 4 once took a 907 x 20 hole to a
    working side of 1025 (padded 1028) under a limit of 1024."""
    image = (3100, 3100)
    for thickness in (2, 20, 200):
        group = HoleGroup(Box(40, 40, 40 + length, 40 + thickness), thickness=thickness)
        plan = plan_crop(group, image, max_hole_side=128, margin=152 if max_working_side > 500
                         else 100, max_working_side=max_working_side)  # fmt: skip
        assert max(plan.working_size) <= max(plan.padded_size) <= max_working_side


def test_a_margin_leaving_no_room_is_refused() -> None:
    group = HoleGroup(Box(10, 10, 20, 20), thickness=10)
    with pytest.raises(ValueError, match="leaves no room"):
        plan_crop(group, (240, 320), max_hole_side=64, margin=100, max_working_side=200)
