"""Adapt a model to one image: a short fine-tuning on the image's own known pixels.

A completion network as small as ours can train for seconds on the photo it is asked to fill:
holes are cut at random in the known part of the image, at the scale the pipeline will complete
it, and the network learns to fill them back, so a facade's grid or a fabric's weave is what it
last practised. The user's selection never reaches training: its pixels are blanked before
anything else reads the image, it is a hole in every training input (as it will be when the
network completes it), and the selection plus `exclusion_margin` working pixels is never part of
a loss target. So two images that differ only inside the selection adapt to the same weights.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from glcic.crops import CropPlan, find_hole_groups, plan_crop
from glcic.errors import CancelledError, InputError
from glcic.model_file import CompletionModel
from glcic.networks import (
    RECEPTIVE_FIELD_RADIUS,
    SIDE_MULTIPLE,
    TRAINABLE_PARTS,
    prepare_input,
    train_only,
)
from glcic.pipeline import (
    DEFAULT_MAX_WORKING_SIDE,
    ProgressCallback,
    _context_offsets,
    _working_crop,
)
from glcic.training.holes import sample_hole
from glcic.training.losses import hole_mse

#: Below this many working pixels a side, a region has too little context to learn from.
MIN_CROP_SIDE = 32


@dataclass(frozen=True)
class AdaptSettings:
    """How the image is practised on. The defaults are the measured best (docs/adapt.md)."""

    learning_rate: float = 1e-4
    batch_size: int = 4
    #: Side of the square training crops in working pixels; None: the model's training crop size.
    crop_size: int | None = None
    #: Working pixels around the selection that are never a loss target: a selection's edge is
    #: often the object's halo or shadow, and the fill must not learn to repeat it.
    exclusion_margin: int = 8
    #: "all" trains every layer; "decoder" only the layers after the dilated convolutions.
    trainable: str = "decoder"
    #: Share of training holes drawn as brush strokes, the rest rectangles (as the default model).
    freeform_fraction: float = 0.75

    def __post_init__(self) -> None:
        if self.learning_rate <= 0 or self.batch_size < 1:
            raise ValueError("learning_rate must be > 0 and batch_size >= 1")
        if self.trainable not in TRAINABLE_PARTS:
            raise ValueError(f"trainable must be 'all' or 'decoder', not {self.trainable!r}")


@dataclass
class AdaptStats:
    """What an adaptation did (filled in when passed to `adapt`)."""

    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)


@dataclass
class _Region:
    """One hole group's context at working resolution, as the pipeline will see it."""

    rgb: torch.Tensor  # (3, H, W) in [0, 1], selection blanked, context shift applied
    selection: np.ndarray  # HxW uint8, 1 = the user's selection (input hole, never a target)
    excluded: np.ndarray  # HxW uint8, 1 = never a loss target (selection plus margin)


def adapt(
    model: CompletionModel,
    image: np.ndarray,
    mask: np.ndarray,
    *,
    seconds: float | None = 30.0,
    steps: int | None = None,
    seed: int = 0,
    settings: AdaptSettings | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    stats: AdaptStats | None = None,
    after_step: Callable[[int, CompletionModel], None] | None = None,
) -> CompletionModel:
    """A copy of `model` fine-tuned on the known region of `image` around the holes of `mask`.

    image: HxWx3 or HxWx4 uint8; mask: HxW uint8, > 0 = selected (as `glcic.complete`). Trains
    for `steps` steps if given (reproducible: same seed, same weights), else until `seconds`
    have passed. `model` itself is never changed. Runs on the model's device in its precision.
    `after_step(steps_done, adapted_model)` lets a caller look at the model as it trains (the
    experiments evaluate several budgets along one run this way).
    Raises `InputError` for unusable input and `CancelledError` if `should_cancel()` turns true.
    """
    settings = settings or AdaptSettings()
    if steps is None and seconds is None:
        raise InputError("give adapt() a time budget (seconds) or a number of steps")
    if (steps is not None and steps < 0) or (seconds is not None and seconds < 0):
        raise InputError("the adaptation budget must not be negative")
    report = stats if stats is not None else AdaptStats()
    notify = progress or (lambda stage, fraction: None)
    started = time.perf_counter()
    adapted = copy.deepcopy(model.network).eval()
    result = CompletionModel(adapted, model.metadata, model.precision)
    regions = _regions(image, mask, model, settings.exclusion_margin)
    if not any(cv2.countNonZero(1 - r.excluded) >= MIN_CROP_SIDE**2 for r in regions):
        raise InputError("too few known pixels around the selection to adapt to")
    crop = _crop_side(regions, settings.crop_size or model.metadata.train_image_size)
    if crop < MIN_CROP_SIDE or (steps == 0) or (steps is None and seconds == 0):
        notify("adapting", 1.0)
        return result

    parameters = train_only(adapted, settings.trainable)
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    rng = np.random.default_rng(seed)
    weights = np.array([r.selection.size for r in regions], dtype=np.float64)
    weights /= weights.sum()
    device = result.device
    mean = result.mean
    hole_min, hole_max = _hole_range(model, crop)
    step = 0
    while True:
        fraction = step / steps if steps is not None else (time.perf_counter() - started) / seconds
        if fraction >= 1.0:
            break
        if should_cancel is not None and should_cancel():
            raise CancelledError("cancelled")
        notify("adapting", fraction)
        batch = [
            _sample(regions[int(rng.choice(len(regions), p=weights))], crop, hole_min, hole_max,
                    settings.freeform_fraction, rng)
            for _ in range(settings.batch_size)
        ]  # fmt: skip
        rgb = torch.stack([b[0] for b in batch]).to(device)
        hole = torch.from_numpy(np.stack([b[1] for b in batch])[:, None]).to(device).float()
        target = torch.from_numpy(np.stack([b[2] for b in batch])[:, None]).to(device).float()
        network_input = prepare_input(rgb, hole, mean).contiguous(memory_format=torch.channels_last)
        with model.precision.autocast(device):
            output = adapted(network_input).float()
        loss = hole_mse(output, rgb, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        report.losses.append(float(loss.detach()))
        step += 1
        if after_step is not None:
            after_step(step, result)
    for parameter in adapted.parameters():
        parameter.requires_grad_(True)
    adapted.eval()
    report.steps = step
    report.seconds = time.perf_counter() - started
    notify("adapting", 1.0)
    return result


def _regions(
    image: np.ndarray, mask: np.ndarray, model: CompletionModel, margin: int
) -> list[_Region]:
    """Each hole group's context crop at the pipeline's working scale."""
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise InputError("the image must be HxWx3 or HxWx4 uint8")
    if mask.shape != image.shape[:2] or mask.dtype != np.uint8:
        raise InputError("the mask must be HxW uint8, the image's size")
    selection = (mask > 0).view(np.uint8)
    # Blank the selection first, so no pixel of it can reach a crop, a resize or a colour mean.
    rgb = np.where(selection[..., None].astype(bool), np.uint8(0), image[..., :3])
    groups = find_hole_groups(mask, merge_distance=RECEPTIVE_FIELD_RADIUS)
    if not groups:
        raise InputError("the mask selects nothing to fill (it is 0 everywhere)")
    max_hole = model.metadata.hole_size_range[1]
    plans = [
        plan_crop(g, mask.shape, max_hole, RECEPTIVE_FIELD_RADIUS, DEFAULT_MAX_WORKING_SIDE)
        for g in groups
    ]
    return [_region(rgb, selection, plan, model, margin) for plan in plans]


def _region(
    rgb: np.ndarray, selection: np.ndarray, plan: CropPlan, model: CompletionModel, margin: int
) -> _Region:
    """The crop as the pipeline feeds it to the network (`_working_crop`, `_context_offsets`),
    unpadded."""
    height, width = plan.working_size
    colour, hole = (a[:height, :width] for a in _working_crop(rgb, selection, plan))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    excluded = cv2.dilate(hole, kernel)
    tensor = torch.from_numpy(np.ascontiguousarray(colour.transpose(2, 0, 1))).float() / 255.0
    shift = model.metadata.context_shift
    if shift:
        offsets = _context_offsets([(colour, hole)], [plan], model.mean, shift)
        tensor = (tensor + offsets[0].cpu()).clamp_(0.0, 1.0)
    return _Region(tensor, hole, excluded)


def _crop_side(regions: list[_Region], wanted: int) -> int:
    """The largest square crop side (a multiple of 4, at most `wanted`) every region holds."""
    smallest = min(min(r.selection.shape) for r in regions)
    return min(wanted, smallest) // SIDE_MULTIPLE * SIDE_MULTIPLE


def _hole_range(model: CompletionModel, crop: int) -> tuple[int, int]:
    """The model's training hole sizes, scaled to the crop when the crop is smaller."""
    low, high = model.metadata.hole_size_range
    factor = min(1.0, crop / model.metadata.train_image_size)
    high = max(4, min(crop, math.floor(high * factor)))
    return max(2, min(high, math.floor(low * factor))), high


def _sample(
    region: _Region,
    crop: int,
    hole_min: int,
    hole_max: int,
    freeform_fraction: float,
    rng: np.random.Generator,
    tries: int = 20,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, tuple[int, int]]:
    """A random crop of the region: (rgb, input hole, loss target, (y, x) of the crop), the
    input hole being the selection plus a training hole, the target the training hole minus
    the excluded pixels."""
    height, width = region.selection.shape
    for _ in range(tries):
        y = int(rng.integers(0, height - crop + 1))
        x = int(rng.integers(0, width - crop + 1))
        window = (slice(y, y + crop), slice(x, x + crop))
        drawn = sample_hole(rng, crop, hole_max, hole_min, hole_max, freeform_fraction).mask
        target = drawn & (1 - region.excluded[window])
        if target.any():
            break
    selection = region.selection[window]
    return region.rgb[:, window[0], window[1]], drawn | selection, target, (y, x)
