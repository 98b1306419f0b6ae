"""Adapting a model to one image: the selection never reaches training, and training works."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support.masks import rect_mask
from support.models import make_tiny_model

from glcic import CancelledError, InputError, complete
from glcic.adaptation import AdaptSettings, AdaptStats, _regions, _sample, adapt
from glcic.training.metrics import mean_l1

#: A small crop keeps a step cheap; the tiny model's holes scale down with it.
FAST = AdaptSettings(batch_size=2, crop_size=64, learning_rate=1e-3)


def weights(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.network.state_dict().values()]


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(weights(a), weights(b), strict=True))


@pytest.fixture
def hole() -> np.ndarray:
    return rect_mask((240, 320), (90, 150, 120, 200))


def test_pixels_under_the_selection_never_change_the_adapted_weights(photo, hole) -> None:
    model = make_tiny_model()
    other = photo.copy()
    other[hole > 0] = np.random.default_rng(1).integers(0, 256, other[hole > 0].shape)
    first = adapt(model, photo, hole, steps=4, seconds=None, settings=FAST)
    second = adapt(model, other, hole, steps=4, seconds=None, settings=FAST)
    assert same_weights(first, second)
    # The control: the same change outside the selection does change them, so the equality
    # above is not a model that ignores its input.
    moved = 255 - photo
    third = adapt(model, moved, hole, steps=4, seconds=None, settings=FAST)
    assert not same_weights(first, third)


def test_a_feathered_selection_is_excluded_wherever_it_is_above_zero(photo) -> None:
    soft = np.zeros((240, 320), np.uint8)
    soft[100:140, 130:190] = 255
    soft[96:100, 126:194] = 3  # a faint feathered edge is still part of the selection
    model = make_tiny_model()
    other = photo.copy()
    other[96:100, 126:194] = 0
    first = adapt(model, photo, soft, steps=3, seconds=None, settings=FAST)
    second = adapt(model, other, soft, steps=3, seconds=None, settings=FAST)
    assert same_weights(first, second)


def test_targets_never_touch_the_selection_or_its_margin(photo, hole) -> None:
    model = make_tiny_model()
    (region,) = _regions(photo, hole, model, 6)
    selection = region.selection.astype(bool)
    excluded = region.excluded.astype(bool)
    assert excluded[selection].all()
    ys, xs = np.nonzero(selection)
    assert excluded[ys.min() - 6, xs.min()] and not excluded[ys.min() - 8, xs.min()]
    rng = np.random.default_rng(0)
    near = 0
    for _ in range(300):
        rgb, input_hole, target, (y, x) = _sample(region, 64, 12, 24, 0.75, rng)
        assert rgb.shape == (3, 64, 64) and input_hole.shape == target.shape == (64, 64)
        window = (slice(y, y + 64), slice(x, x + 64))
        assert not np.any(target.astype(bool) & excluded[window])
        # The selection is a hole in every input, as it will be when the network completes it.
        assert input_hole.astype(bool)[selection[window]].all()
        assert not np.any(target.astype(bool) & ~input_hole.astype(bool))
        near += bool(selection[window].any() and target.any())
    assert near > 50  # crops next to the selection, where the exclusion matters, were drawn


def test_same_seed_same_weights_and_the_given_model_is_untouched(photo, hole) -> None:
    model = make_tiny_model()
    before = weights(model)
    first = adapt(model, photo, hole, steps=3, seconds=None, seed=5, settings=FAST)
    second = adapt(model, photo, hole, steps=3, seconds=None, seed=5, settings=FAST)
    third = adapt(model, photo, hole, steps=3, seconds=None, seed=6, settings=FAST)
    assert same_weights(first, second)
    assert not same_weights(first, third)
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model), strict=True))
    assert not model.network.training and not first.network.training
    assert all(p.requires_grad for p in first.network.parameters())


def test_adapting_teaches_the_network_the_images_own_colours(hole) -> None:
    """The training loop learns: a random network fills with grey; adapted to a red-violet
    image with a fine dot pattern, it fills the (never trained on) selection with the image's
    colours."""
    image = np.zeros((240, 320, 3), np.uint8)
    image[...] = (200, 40, 90)
    image[::2, ::3] = (190, 50, 80)
    model = make_tiny_model()
    stats = AdaptStats()
    adapted = adapt(
        model, image, hole, steps=20, seconds=None, stats=stats,
        settings=AdaptSettings(batch_size=4, crop_size=64, learning_rate=1e-2),
    )  # fmt: skip
    assert stats.steps == 20 and len(stats.losses) == 20
    selection = hole > 0
    before = mean_l1(complete(image, hole, model, blend="none"), image, selection)
    after = mean_l1(complete(image, hole, adapted, blend="none"), image, selection)
    assert before > 0.2 and after < 0.3 * before


def test_a_time_budget_stops_and_reports_progress(photo, hole) -> None:
    seen: list[tuple[str, float]] = []
    stats = AdaptStats()
    adapt(
        make_tiny_model(), photo, hole, seconds=0.5, settings=FAST, stats=stats,
        progress=lambda stage, fraction: seen.append((stage, fraction)),
    )  # fmt: skip
    assert stats.steps >= 1
    fractions = [f for _, f in seen]
    assert {s for s, _ in seen} == {"adapting"}
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_cancel_stops_adapting(photo, hole) -> None:
    calls = iter(range(100))
    with pytest.raises(CancelledError):
        adapt(
            make_tiny_model(), photo, hole, steps=50, seconds=None, settings=FAST,
            should_cancel=lambda: next(calls) >= 2,
        )  # fmt: skip


def test_zero_budget_returns_an_equal_copy(photo, hole) -> None:
    model = make_tiny_model()
    copy = adapt(model, photo, hole, steps=0, seconds=None)
    assert copy.network is not model.network and same_weights(copy, model)


def test_several_holes_at_different_scales_all_take_part(photo) -> None:
    wide = np.concatenate([photo, photo[:, ::-1], photo], axis=1)  # 240 x 960
    mask = rect_mask(wide.shape, (20, 40, 20, 40))
    mask[150:230, 700:820] = 255  # far from the first, and thick: a smaller working scale
    model = make_tiny_model(hole_size_range=(16, 24))
    regions = _regions(wide, mask, model, 4)
    assert len(regions) == 2
    assert regions[0].selection.shape != regions[1].selection.shape
    adapted = adapt(model, wide, mask, steps=2, seconds=None, settings=FAST)
    assert not same_weights(adapted, model)


def test_the_decoder_only_setting_leaves_the_encoder_alone(photo, hole) -> None:
    model = make_tiny_model()
    adapted = adapt(
        model, photo, hole, steps=2, seconds=None,
        settings=AdaptSettings(batch_size=2, crop_size=64, trainable="decoder"),
    )  # fmt: skip
    first = next(model.network.parameters())
    assert torch.equal(first, next(adapted.network.parameters()))
    assert not same_weights(adapted, model)


@pytest.mark.parametrize(
    ("image", "mask", "options", "message"),
    [
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8), {}, "selects nothing"),
        (np.zeros((64, 64, 3), np.uint8), np.zeros((32, 32), np.uint8), {}, "image's size"),
        (np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8), {}, "HxWx3"),
        (np.zeros((64, 64, 3), np.uint8), np.full((64, 64), 255, np.uint8), {"seconds": None},
         "budget"),
        (np.zeros((64, 64, 3), np.uint8), np.full((64, 64), 255, np.uint8), {"steps": -1},
         "negative"),
        (np.zeros((64, 64, 3), np.uint8), np.full((64, 64), 255, np.uint8), {}, "too few known"),
    ],
)  # fmt: skip
def test_bad_input_is_explained(image, mask, options, message) -> None:
    with pytest.raises(InputError, match=message):
        adapt(make_tiny_model(), image, mask, **options)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="trainable"):
        AdaptSettings(trainable="encoder")
    with pytest.raises(ValueError, match="learning_rate"):
        AdaptSettings(learning_rate=0)
