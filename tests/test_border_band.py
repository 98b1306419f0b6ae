"""The border band's measures (glcic.training.border_band), on arrays whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from glcic.training.border_band import band_and_inside_errors, split_cast


def test_a_cast_splits_into_brightness_and_hue_in_quadrature() -> None:
    brightness, hue = split_cast(np.array([10.0, 10.0, 10.0]))
    assert brightness == pytest.approx(np.sqrt(300)) and hue == pytest.approx(0.0)
    brightness, hue = split_cast(np.array([10.0, 0.0, -10.0]))
    assert brightness == pytest.approx(0.0) and hue == pytest.approx(np.sqrt(200))
    error = np.array([61.0, 30.0, 46.0])  # the dam photo: a pink band
    brightness, hue = split_cast(error)
    assert brightness**2 + hue**2 == pytest.approx(float(error @ error))
    assert hue > 20


def test_a_fill_too_pink_along_the_edge_only_has_a_band_hue_cast() -> None:
    truth = np.full((64, 64, 3), 100, np.uint8)
    hole = np.zeros((64, 64), bool)
    hole[10:50, :40] = True  # runs into the left edge
    filled = truth.copy()
    filled[:, :4] += np.array([20, 0, 20], np.uint8)  # pink within 4 px of the edge
    band, inside, matched = band_and_inside_errors(filled, truth, hole)
    assert split_cast(band)[1] > 5
    assert np.allclose(inside, 0) and np.allclose(matched, 0)


def test_a_hole_clear_of_the_border_has_no_band() -> None:
    truth = np.zeros((64, 64, 3), np.uint8)
    hole = np.zeros((64, 64), bool)
    hole[20:40, 20:40] = True
    assert band_and_inside_errors(truth, truth, hole) is None
