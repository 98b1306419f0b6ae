"""Poisson blending at the image edge: the two treatments a model file can ask for."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from support.masks import rect_mask

from glcic import CompletionModel
from glcic import complete as complete_image
from glcic.blending import poisson_blend

#: A colour offset the blend must remove: the network's structure is right, its levels are off.
OFFSET = (30, -20, 10)

EDGE_BOXES = [
    (90, 150, 250, 320),  # right edge
    (0, 60, 100, 180),  # top edge
    (150, 240, 0, 80),  # bottom-left corner
]


def _offset_fill(photo: np.ndarray, hole: np.ndarray) -> np.ndarray:
    fill = photo.copy()
    fill[hole > 0] = np.clip(photo[hole > 0].astype(int) + OFFSET, 0, 255)
    return fill


def _hole_error(result: np.ndarray, photo: np.ndarray, hole: np.ndarray) -> float:
    return float(np.abs(result.astype(int) - photo)[hole > 0].mean())


@pytest.mark.parametrize("box", EDGE_BOXES)
def test_mirror_keeps_the_fills_structure_up_to_the_image_edge(photo, box) -> None:
    """A fill that is the truth plus an offset blends back to the truth when the edge is free;
    pinned to Telea's smear there, it bends toward the smear along the edge. The default depth
    cuts the mirror image of holes thicker than it (the corner's 90 px) short of exact."""
    hole = rect_mask(photo.shape, box)
    fill = _offset_fill(photo, hole)
    exact = _hole_error(poisson_blend(photo, fill, hole, "mirror", 10_000), photo, hole)
    mirrored = _hole_error(poisson_blend(photo, fill, hole, "mirror"), photo, hole)
    pinned = _hole_error(poisson_blend(photo, fill, hole, "telea"), photo, hole)
    assert exact < 2.0, exact
    assert pinned > 1.5 * mirrored, (pinned, mirrored)


@pytest.mark.parametrize("gap", [1, 2, 3, 4, 5, 8])
@pytest.mark.parametrize("side", ["top", "bottom", "left", "right"])
def test_holes_that_stop_short_of_the_edge_blend_the_same_either_way(photo, side, gap) -> None:
    """Only a hole on the edge row or column itself is mirrored: a known strip, even one pixel
    wide, between a hole and the edge is boundary in both treatments."""
    height, width = photo.shape[:2]
    boxes = {
        "top": (gap, gap + 40, 100, 160),
        "bottom": (height - gap - 40, height - gap, 100, 160),
        "left": (100, 140, gap, gap + 50),
        "right": (100, 140, width - gap - 50, width - gap),
    }
    hole = rect_mask(photo.shape, boxes[side])
    fill = _offset_fill(photo, hole)
    assert np.array_equal(
        poisson_blend(photo, fill, hole, "mirror"), poisson_blend(photo, fill, hole, "telea")
    )


def test_a_second_hole_near_a_mirrored_edge_keeps_its_known_strip(photo) -> None:
    hole = rect_mask(photo.shape, (0, 50, 100, 160))  # on the top edge: mirrored
    hole[1:40, 200:260] = 255  # one known row above it
    fill = _offset_fill(photo, hole)
    mirrored = poisson_blend(photo, fill, hole, "mirror")
    pinned = poisson_blend(photo, fill, hole, "telea")
    second = np.zeros_like(hole)
    second[1:40, 200:260] = 255
    # The second hole meets its known row as well as when nothing is mirrored.
    assert _hole_error(mirrored, photo, second) <= _hole_error(pinned, photo, second) + 0.1


def test_only_the_image_edges_are_mirrored(photo) -> None:
    """A crop side that is not the image's edge (`image_edges` False) stays pinned."""
    hole = rect_mask(photo.shape, (90, 150, 250, 320))
    fill = _offset_fill(photo, hole)
    inner = poisson_blend(photo, fill, hole, "mirror", image_edges=(True, True, True, False))
    assert np.array_equal(inner, poisson_blend(photo, fill, hole, "telea"))


def test_a_hole_spanning_the_crop_still_blends(photo) -> None:
    hole = rect_mask(photo.shape, (0, 240, 100, 140))  # top to bottom: its mirror cannot fit
    result = poisson_blend(photo, _offset_fill(photo, hole), hole, "mirror")
    assert np.array_equal(result[hole == 0], photo[hole == 0])
    assert _hole_error(result, photo, hole) < 20


def test_an_unknown_border_treatment_is_refused(photo) -> None:
    hole = rect_mask(photo.shape, (0, 60, 100, 180))
    with pytest.raises(ValueError, match="border must be one of telea, mirror"):
        poisson_blend(photo, photo, hole, "smear")


def test_the_pipeline_blends_as_the_model_file_says(photo, tiny_model) -> None:
    """The model's `border_blend` reaches the blend, for image edges only: a small margin
    makes a window edge of a hole that is far from the image's."""
    mirror = CompletionModel(
        tiny_model.network, dataclasses.replace(tiny_model.metadata, border_blend="mirror")
    )
    assert tiny_model.metadata.border_blend == "telea"
    at_edge = rect_mask(photo.shape, (90, 150, 260, 320))
    inside = rect_mask(photo.shape, (90, 150, 120, 180))
    assert not np.array_equal(
        complete_image(photo, at_edge, tiny_model), complete_image(photo, at_edge, mirror)
    )
    assert np.array_equal(
        complete_image(photo, inside, tiny_model), complete_image(photo, inside, mirror)
    )
    # With no margin the crop, and so the blending window, is the hole's own box: a round hole
    # touches all four of its sides, none of them an image edge.
    disc = cv2.circle(np.zeros(photo.shape[:2], np.uint8), (150, 120), 30, 255, -1)
    assert np.array_equal(
        complete_image(photo, disc, tiny_model, margin=0),
        complete_image(photo, disc, mirror, margin=0),
    )
