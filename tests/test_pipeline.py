"""The completion pipeline on the cases users hit: borders, several holes, soft and large holes."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest
import torch
from support.masks import rect_mask
from support.models import make_tiny_model

from glcic import CancelledError, CompletionModel, CompletionStats, InputError, ModelMetadata
from glcic import complete as complete_image
from glcic.pipeline import complete_region


def test_pixels_outside_mask_are_bit_identical(photo, tiny_model) -> None:
    rng = np.random.default_rng(0)
    for _ in range(3):
        mask = np.zeros(photo.shape[:2], np.uint8)
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, 200), rng.integers(0, 280)
            mask[y : y + rng.integers(5, 60), x : x + rng.integers(5, 60)] = rng.integers(1, 256)
        out = complete_image(photo, mask, tiny_model)
        assert out.shape == photo.shape and out.dtype == np.uint8
        assert np.array_equal(out[mask == 0], photo[mask == 0])


def test_hole_is_filled(photo, tiny_model) -> None:
    image = photo.copy()
    image[100:140, 100:160] = (255, 0, 255)  # an object to remove
    mask = rect_mask(image.shape, (100, 140, 100, 160))
    out = complete_image(image, mask, tiny_model)
    filled = out[100:140, 100:160].reshape(-1, 3)
    assert not np.any(np.all(filled == (255, 0, 255), axis=1))


@pytest.mark.parametrize(
    "box",
    [
        (0, 30, 100, 140),  # top edge
        (210, 240, 100, 140),  # bottom edge
        (100, 140, 0, 30),  # left edge
        (100, 140, 290, 320),  # right edge
        (0, 25, 0, 25),  # corners
        (0, 25, 295, 320),
        (215, 240, 0, 25),
        (215, 240, 295, 320),
    ],
)
@pytest.mark.parametrize("blend", ["poisson", "none"])
def test_holes_touching_borders_and_corners(photo, tiny_model, box, blend) -> None:
    mask = rect_mask(photo.shape, box)
    out = complete_image(photo, mask, tiny_model, blend=blend)
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    y0, y1, x0, x1 = box
    assert not np.array_equal(out[y0:y1, x0:x1], photo[y0:y1, x0:x1])


def test_several_holes_get_their_own_crops(photo, tiny_model) -> None:
    mask = rect_mask(photo.shape, (10, 20, 10, 20), (200, 230, 280, 310))
    stats = CompletionStats()
    out = complete_image(photo, mask, tiny_model, margin=32, max_working_side=256, stats=stats)
    assert len(stats.crops) == 2
    for plan in stats.crops:  # each crop keeps the hole with real context, inside the image
        hole, crop = plan.group.box, plan.crop
        assert 0 <= crop.x0 <= hole.x0 and hole.x1 <= crop.x1 <= 320
        assert 0 <= crop.y0 <= hole.y0 and hole.y1 <= crop.y1 <= 240
    assert np.array_equal(out[mask == 0], photo[mask == 0])


def test_thin_strokes_are_not_scaled_down_for_their_length(photo, tiny_model) -> None:
    """A long 6-pixel stroke is 6 thick: filled at full resolution, whatever its length."""
    mask = np.zeros(photo.shape[:2], np.uint8)
    cv2.line(mask, (10, 20), (300, 220), 255, 6)
    stats = CompletionStats()
    complete_image(photo, mask, tiny_model, stats=stats)
    (plan,) = stats.crops
    assert plan.group.thickness <= 8 and plan.scale == 1.0


def test_large_hole_is_scaled_to_trained_hole_size(photo) -> None:
    model = make_tiny_model(hole_size_range=(24, 32))
    mask = rect_mask(photo.shape, (60, 180, 80, 240))  # 120 thick, trained up to 32
    stats = CompletionStats()
    out = complete_image(photo, mask, model, margin=32, max_working_side=256, stats=stats)
    (plan,) = stats.crops
    assert abs(plan.group.thickness - 120) <= 2
    assert plan.scale == pytest.approx(32 / plan.group.thickness)
    assert all(side % 4 == 0 for side in plan.padded_size)
    assert np.array_equal(out[mask == 0], photo[mask == 0])
    assert out[60:180, 80:240].std() > 0


def test_working_size_limit_shrinks_large_crops(photo, tiny_model) -> None:
    mask = rect_mask(photo.shape, (40, 60, 40, 60))
    stats = CompletionStats()
    complete_image(photo, mask, tiny_model, margin=100, max_working_side=264, stats=stats)
    (plan,) = stats.crops
    assert max(plan.working_size) <= 264


def test_soft_mask_blends_proportionally(photo, tiny_model) -> None:
    soft = np.zeros(photo.shape[:2], np.uint8)
    soft[80:160, 100:200] = np.linspace(1, 255, 100, dtype=np.uint8)[None, :]
    full = np.where(soft > 0, np.uint8(255), np.uint8(0))
    fill = complete_image(photo, full, tiny_model).astype(np.float64)
    out = complete_image(photo, soft, tiny_model).astype(np.float64)
    alpha = soft[..., None] / 255.0
    expected = photo * (1 - alpha) + fill * alpha
    assert np.abs(out - expected).max() <= 0.5 + 1e-9
    assert np.array_equal(out[soft == 255], fill[soft == 255])


def test_rgba_alpha_passes_through(photo, tiny_model) -> None:
    alpha = np.tile((np.arange(320) % 256).astype(np.uint8)[None, :], (240, 1))
    image = np.dstack([photo, alpha])
    mask = rect_mask(image.shape, (50, 100, 50, 150))
    out = complete_image(image, mask, tiny_model)
    assert out.shape == (240, 320, 4)
    assert np.array_equal(out[..., 3], alpha)
    assert np.array_equal(out[mask == 0], image[mask == 0])
    assert np.array_equal(out[..., :3], complete_image(photo, mask, tiny_model))


def test_deterministic(photo, tiny_model) -> None:
    mask = rect_mask(photo.shape, (50, 100, 50, 150), (180, 200, 10, 40))
    assert np.array_equal(
        complete_image(photo, mask, tiny_model), complete_image(photo, mask, tiny_model)
    )


class _OffsetGradientNetwork(torch.nn.Module):
    """Outputs the image's own horizontal gradient (slope per pixel) plus a constant offset."""

    def __init__(self, slope: float, base: float) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.slope, self.base = slope, base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[-1]
        ramp = self.base + self.slope * torch.arange(width, dtype=torch.float32)
        return ramp.view(1, 1, 1, width).expand(x.shape[0], 3, x.shape[2], width).clone()


class _RecordingConstantNetwork(torch.nn.Module):
    """Remembers its inputs and outputs one constant colour everywhere."""

    def __init__(self, colour: tuple[float, float, float]) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.colour = torch.tensor(colour).view(1, 3, 1, 1)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.clone())
        return self.colour.expand(x.shape[0], 3, *x.shape[2:]).clone()


_SHIFT_TEST_MEAN = np.array([0.45, 0.44, 0.36], np.float32)
_SHIFT_TEST_OUTPUT = (0.7, 0.6, 0.5)  # far enough from 0 and 1 that no offset here clips it


def _shift_test_model(shift: float) -> CompletionModel:
    metadata = ModelMetadata(
        width=0.125, mean=tuple(_SHIFT_TEST_MEAN), hole_size_range=(48, 96), context_shift=shift
    )
    return CompletionModel(_RecordingConstantNetwork(_SHIFT_TEST_OUTPUT).eval(), metadata)


def _shifted_fill(known_pixels: np.ndarray, shift: float) -> np.ndarray:
    """What the constant network's output becomes once the crop's offset is taken back off."""
    offset = shift * (_SHIFT_TEST_MEAN - known_pixels.mean(axis=0) / 255.0)
    return np.floor(255 * (np.array(_SHIFT_TEST_OUTPUT) - offset) + 0.5)


@pytest.mark.parametrize("shift", [0.0, 0.5, 1.0])
def test_context_shift_moves_the_known_colours_toward_the_mean_and_back(shift) -> None:
    image = np.empty((96, 128, 3), np.uint8)
    image[:] = (20, 30, 10)  # a night scene: far below the training mean
    image[:, :64] += 8  # two tones, so the known mean is a real average
    box = (30, 60, 40, 90)
    mask = rect_mask(image.shape, box)
    image[mask > 0] = (250, 10, 200)  # what is under the hole must not count
    model = _shift_test_model(shift)
    # A margin wider than the image: the crop is the whole image, unscaled and unpadded.
    out = complete_image(image, mask, model, blend="none", margin=64, max_working_side=256)
    known = mask == 0
    offset = shift * (_SHIFT_TEST_MEAN - image[known].mean(axis=0) / 255.0)
    # The network saw the known pixels moved `shift` of the way to the mean (inputs are centred).
    (seen,) = model.network.inputs
    assert seen.shape == (1, 4, *image.shape[:2])
    seen_known = seen[0, :3].permute(1, 2, 0).numpy()[known]
    np.testing.assert_allclose(
        seen_known, image[known] / 255.0 + offset - _SHIFT_TEST_MEAN, atol=1e-5
    )
    # ...and its output came back with the offset removed.
    fill = out[box[0] : box[1], box[2] : box[3]].reshape(-1, 3).astype(np.float64)
    expected = _shifted_fill(image[known], shift)
    np.testing.assert_allclose(fill, np.broadcast_to(expected, fill.shape), atol=1)
    assert np.array_equal(out[known], image[known])


def test_context_shift_is_per_crop_in_a_batch() -> None:
    """Two crops of one size run as one batch; each gets the offset of its own surroundings."""
    image = np.empty((96, 256, 3), np.uint8)
    image[:, :128] = (15, 20, 25)  # dark left half
    image[:, 128:] = (230, 220, 200)  # bright right half
    boxes = ((38, 58, 30, 50), (38, 58, 206, 226))
    mask = rect_mask(image.shape, *boxes)
    model = _shift_test_model(0.5)
    stats = CompletionStats()
    out = complete_image(image, mask, model, blend="none", margin=32, stats=stats)
    assert len(model.network.inputs) == 1 and model.network.inputs[0].shape[0] == 2
    for (y0, y1, x0, x1), plan in zip(boxes, stats.crops, strict=True):
        crop = plan.crop
        known = mask[crop.slices] == 0
        fill = out[y0:y1, x0:x1].reshape(-1, 3).astype(np.float64)
        expected = _shifted_fill(image[crop.slices][known], 0.5)
        np.testing.assert_allclose(fill, np.broadcast_to(expected, fill.shape), atol=1)
    assert not np.array_equal(out[40, 40], out[40, 216])


def test_context_shift_uses_the_working_resolution_when_scaled_down() -> None:
    image = np.empty((192, 256, 3), np.uint8)
    image[:] = (30, 40, 60)
    box = (20, 172, 40, 216)  # 152 px thick: scaled down to the model's 96 px holes
    mask = rect_mask(image.shape, box)
    image[mask > 0] = (255, 255, 255)
    model = _shift_test_model(0.5)
    stats = CompletionStats()
    out = complete_image(image, mask, model, blend="none", margin=32, stats=stats)
    assert stats.crops[0].scale < 1
    fill = out[box[0] + 8 : box[1] - 8, box[2] + 8 : box[3] - 8].reshape(-1, 3).astype(np.float64)
    expected = _shifted_fill(image[mask == 0], 0.5)
    np.testing.assert_allclose(fill, np.broadcast_to(expected, fill.shape), atol=1)


def test_context_shift_leaves_crops_without_known_pixels_alone() -> None:
    from glcic.crops import Box, CropPlan, HoleGroup
    from glcic.pipeline import _context_offsets

    rgb = np.empty((4, 4, 3), np.uint8)
    rgb[:2], rgb[2:] = (25, 51, 76), (26, 51, 77)  # known mean (0.1, 0.2, 0.3)
    crops = [(rgb, np.zeros((4, 4), np.uint8)), (rgb, np.ones((4, 4), np.uint8))]
    box = Box(0, 0, 4, 4)
    plans = [CropPlan(HoleGroup(box, 4), box, 1.0, (4, 4), (4, 4))] * 2
    offsets = _context_offsets(crops, plans, torch.tensor([0.5, 0.5, 0.5]), 0.5)
    np.testing.assert_allclose(
        offsets.view(2, 3).numpy(), [[0.2, 0.15, 0.1], [0, 0, 0]], rtol=1e-6, atol=1e-7
    )


def _boundary_jump(out: np.ndarray, image: np.ndarray, box) -> float:
    """Mean |difference| between hole pixels on the boundary and their outside neighbours,
    minus what the true image has there (so a perfect fill scores zero)."""
    y0, y1, x0, x1 = box
    o, i = out.astype(np.float64), image.astype(np.float64)
    pairs = [
        (o[y0, x0:x1] - o[y0 - 1, x0:x1], i[y0, x0:x1] - i[y0 - 1, x0:x1]),
        (o[y1 - 1, x0:x1] - o[y1, x0:x1], i[y1 - 1, x0:x1] - i[y1, x0:x1]),
        (o[y0:y1, x0] - o[y0:y1, x0 - 1], i[y0:y1, x0] - i[y0:y1, x0 - 1]),
        (o[y0:y1, x1 - 1] - o[y0:y1, x1], i[y0:y1, x1 - 1] - i[y0:y1, x1]),
    ]
    return float(np.mean([np.abs(a - b).mean() for a, b in pairs]))


def test_poisson_blending_removes_the_seam() -> None:
    slope = 0.6 / 255  # per pixel, in [0, 1] units
    xx = np.tile(np.arange(320, dtype=np.float64), (240, 1))
    gray = 40 + 0.6 * xx
    image = np.clip(np.dstack([gray, gray, gray]) + 0.5, 0, 255).astype(np.uint8)
    box = (90, 150, 120, 200)
    mask = rect_mask(image.shape, box)
    model = CompletionModel(
        _OffsetGradientNetwork(slope, base=0.05).eval(),
        ModelMetadata(width=0.125, hole_size_range=(48, 96)),
    )
    raw = complete_image(image, mask, model, blend="none", margin=32, max_working_side=256)
    blended = complete_image(image, mask, model, blend="poisson", margin=32, max_working_side=256)
    assert _boundary_jump(raw, image, box) > 15  # the network's colour offset shows as a seam
    assert _boundary_jump(blended, image, box) < 1.5
    # Inside, the blended fill keeps the network's gradient and meets the true values.
    assert (
        np.abs(
            blended[box[0] : box[1], box[2] : box[3]].astype(int)
            - image[box[0] : box[1], box[2] : box[3]]
        ).mean()
        < 2
    )


@pytest.mark.parametrize(
    ("image", "mask", "message"),
    [
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), np.uint8), "selects nothing"),
        (np.zeros((64, 64, 3), np.uint8), np.full((64, 64), 255, np.uint8), "no known pixels"),
        (
            np.zeros((64, 64, 3), np.uint8),
            np.zeros((64, 65), np.uint8),
            "is 64x64 but mask is 65x64",
        ),
        (np.zeros((64, 64, 3), np.float32), np.zeros((64, 64), np.uint8), "must be 8-bit"),
        (np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8), "HxWx3"),
        (np.zeros((64, 64, 2), np.uint8), np.zeros((64, 64), np.uint8), "HxWx3"),
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 1), np.uint8), "mask must be HxW"),
        (np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64), bool), "mask must be 8-bit"),
        (np.zeros((0, 64, 3), np.uint8), np.zeros((0, 64), np.uint8), "empty"),
    ],
)
def test_bad_input_is_a_clear_input_error(tiny_model, image, mask, message) -> None:
    with pytest.raises(InputError, match=message):
        complete_image(image, mask, tiny_model)


def test_bad_options_are_input_errors(photo, tiny_model) -> None:
    mask = rect_mask(photo.shape, (10, 20, 10, 20))
    with pytest.raises(InputError, match="blend must be one of"):
        complete_image(photo, mask, tiny_model, blend="seamless")
    with pytest.raises(InputError, match="too small for margin"):
        complete_image(photo, mask, tiny_model, max_working_side=100)


def test_cancel_between_crops(photo, tiny_model) -> None:
    mask = rect_mask(photo.shape, (10, 20, 10, 20))
    with pytest.raises(CancelledError):
        complete_image(photo, mask, tiny_model, should_cancel=lambda: True)


def test_progress_reports_stages(photo, tiny_model) -> None:
    seen = []
    mask = rect_mask(photo.shape, (10, 20, 10, 20))
    complete_image(photo, mask, tiny_model, progress=lambda s, f: seen.append((s, f)))
    assert seen[0] == ("planning", 0.0) and seen[-1] == ("done", 1.0)
    assert ("network", 0.0) in seen


def test_tiny_images_work(tiny_model) -> None:
    image = np.full((3, 5, 3), 100, np.uint8)
    mask = np.zeros((3, 5), np.uint8)
    mask[1, 2] = 255
    out = complete_image(image, mask, tiny_model)
    assert out.shape == (3, 5, 3)
    assert np.array_equal(out[mask == 0], image[mask == 0])


def _numpy_peak(image: np.ndarray, mask: np.ndarray, model) -> int:
    tracemalloc.start()
    try:
        complete_image(image, mask, model)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.slow
def test_memory_follows_the_hole_not_the_image(tiny_model) -> None:
    """The same 200x200 hole in a 2000x2000 and a 4000x4000 RGBA image: the larger image costs
    one more image copy (the result) and nothing else; a full-image float array would be 4x."""
    peaks, sizes = [], []
    for side in (2000, 4000):
        image = np.zeros((side, side, 4), np.uint8)
        image[..., 1] = 90
        mask = rect_mask(image.shape, (900, 1100, 900, 1100))
        peaks.append(_numpy_peak(image, mask, tiny_model))
        sizes.append(image.nbytes)
    assert peaks[1] - peaks[0] < 1.1 * (sizes[1] - sizes[0])
    assert peaks[1] < 1.5 * sizes[1]


def test_inplace_writes_into_the_given_image(photo, tiny_model) -> None:
    mask = rect_mask(photo.shape, (50, 100, 50, 150))
    expected = complete_image(photo, mask, tiny_model)
    buffer = photo.copy()
    assert complete_image(buffer, mask, tiny_model, inplace=True) is buffer
    assert np.array_equal(buffer, expected)
    frozen = photo.copy()
    frozen.flags.writeable = False
    with pytest.raises(InputError, match="writeable"):
        complete_image(frozen, mask, tiny_model, inplace=True)


def test_complete_region_is_the_changed_box_of_the_full_result(photo, tiny_model) -> None:
    mask = rect_mask(photo.shape, (50, 100, 50, 150), (180, 200, 10, 40))
    full = complete_image(photo, mask, tiny_model)
    region = complete_region(photo, mask, tiny_model)
    assert (region.x, region.y) == (10, 50)
    assert region.pixels.shape == (150, 140, 3)
    assert np.array_equal(region.pixels, full[50:200, 10:150])


def test_hole_at_image_edge_does_not_bring_back_what_it_removes() -> None:
    image = np.full((120, 160, 3), 128, np.uint8)
    image[40:80, 0:20] = (255, 0, 0)  # an object touching the left edge
    mask = np.zeros((120, 160), np.uint8)
    mask[35:85, 0:25] = 255
    flat = CompletionModel(
        _OffsetGradientNetwork(0.0, base=128 / 255).eval(), ModelMetadata(hole_size_range=(48, 96))
    )
    out = complete_image(image, mask, flat, margin=32, max_working_side=256)
    filled = out[35:85, 0:25].astype(int)
    assert np.abs(filled - 128).max() <= 2


@pytest.mark.parametrize("shape", [(1, 30), (2, 30), (30, 2), (2, 2)])
def test_strips_one_or_two_pixels_wide(tiny_model, shape) -> None:
    image = np.full((*shape, 3), 90, np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[0, 0] = 255
    out = complete_image(image, mask, tiny_model)
    assert out.shape == image.shape
    assert np.array_equal(out[mask == 0], image[mask == 0])


def test_zero_one_masks_are_refused_with_advice(tiny_model) -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 1
    with pytest.raises(InputError, match="use 255"):
        complete_image(image, mask, tiny_model)
