"""The completion pipeline: the one place that turns (image, mask, model) into a filled image.

For each group of holes: crop the hole with real context around it, scale it so the hole matches
what the model was trained on, pad to a multiple of 4, run the network (crops of equal size in one
batch), scale back, blend (fast marching + Poisson, as in the paper), and composite with the
selection's own softness. Only crops are ever converted to float, so an 8000x8000 image with one
small hole costs about one copy of the image plus the crop.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from glcic.blending import MIRROR_DEPTH, composite_soft, poisson_blend
from glcic.crops import Box, CropPlan, find_hole_groups, plan_crop
from glcic.errors import CancelledError, GlcicError, InputError
from glcic.model_file import CompletionModel
from glcic.networks import RECEPTIVE_FIELD_RADIUS, prepare_input

BLEND_MODES = ("poisson", "none")

#: Longest side of a crop at working resolution; larger crops are scaled down further.
DEFAULT_MAX_WORKING_SIDE = 1024

#: At least this share of a crop must be known pixels for the network to complete from.
MIN_KNOWN_FRACTION = 0.01

#: Crops of equal size are batched, up to this many working pixels per batch: enough to keep
#: a GPU busy, small enough that a cancel or timeout never waits long for the batch in flight.
_MAX_BATCH_PIXELS = 1024 * 1024

#: Known pixels kept around a hole box for blending (Poisson boundary, Telea neighbourhood).
_BLEND_RING = 8

ProgressCallback = Callable[[str, float], None]


@dataclass
class CompletionStats:
    """What a run did and where its time went (filled in when passed to `complete`)."""

    crops: list[CropPlan] = field(default_factory=list)
    network_seconds: float = 0.0
    blend_seconds: float = 0.0
    total_seconds: float = 0.0


@dataclass(frozen=True)
class CompletedRegion:
    """The part of the image a completion changed: the mask's bounding box."""

    x: int
    y: int
    pixels: np.ndarray  # height x width x channels, uint8


def complete(
    image: np.ndarray,
    mask: np.ndarray,
    model: CompletionModel,
    *,
    blend: str = "poisson",
    margin: int = RECEPTIVE_FIELD_RADIUS,
    max_working_side: int = DEFAULT_MAX_WORKING_SIDE,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    stats: CompletionStats | None = None,
    inplace: bool = False,
) -> np.ndarray:
    """Fill the selected region of `image` and return a new array of the same shape and dtype.

    With `inplace=True` the fill is written into `image` itself and `image` is returned, which
    saves one image-sized copy for callers that own their buffer (the daemon). Holes completed
    later in the same call may then see earlier fills as context. `complete_region` returns only
    the part that changed.

    image: HxWx3 or HxWx4 uint8 (alpha is passed through untouched). mask: HxW uint8, 0 = keep,
    255 = fill, values between blend the fill in proportionally (a feathered selection). Pixels
    where the mask is 0 come back bit-identical. Runs on the model's device.

    Raises `InputError` for unusable input and `CancelledError` if `should_cancel()` turns true.
    """
    target = "inplace" if inplace else "copy"
    return _complete(
        image, mask, model, target, blend=blend, margin=margin,
        max_working_side=max_working_side, progress=progress, should_cancel=should_cancel,
        stats=stats,
    ).pixels  # fmt: skip


def _complete(
    image: np.ndarray,
    mask: np.ndarray,
    model: CompletionModel,
    target: str,
    *,
    blend: str = "poisson",
    margin: int = RECEPTIVE_FIELD_RADIUS,
    max_working_side: int = DEFAULT_MAX_WORKING_SIDE,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    stats: CompletionStats | None = None,
) -> CompletedRegion:
    """The pipeline, writing into `target`: "copy" (a new image), "inplace" (`image` itself) or
    "region" (a new array of just the holes' bounding box)."""
    started = time.perf_counter()
    _validate(image, mask, blend, margin, max_working_side)
    if target == "inplace" and not image.flags.writeable:
        raise InputError("inplace=True needs a writeable image array")
    report = stats if stats is not None else CompletionStats()
    notify = progress or (lambda stage, fraction: None)
    notify("planning", 0.0)
    height, width = mask.shape
    groups = find_hole_groups(mask, merge_distance=margin)
    if not groups:
        raise InputError("the mask selects nothing to fill (it is 0 everywhere)")
    max_hole = model.metadata.hole_size_range[1]
    plans = [plan_crop(g, (height, width), max_hole, margin, max_working_side) for g in groups]
    report.crops = plans
    for plan in plans:
        _check_known_context(mask, plan)

    if target == "inplace":
        result, origin = image, (0, 0)
    elif target == "region":  # the mask's bounding box: the union of the groups' boxes
        box = groups[0].box
        for group in groups[1:]:
            box = box.union(group.box)
        result, origin = image[box.slices].copy(), (box.x0, box.y0)
    else:
        result, origin = image.copy(), (0, 0)
    batches: dict[tuple[int, int], list[CropPlan]] = defaultdict(list)
    for plan in plans:
        batches[plan.padded_size].append(plan)
    done = 0
    border = model.metadata.border_blend
    for size, same_size in batches.items():
        per_batch = max(1, _MAX_BATCH_PIXELS // (size[0] * size[1]))
        for start in range(0, len(same_size), per_batch):
            if should_cancel is not None and should_cancel():
                raise CancelledError("cancelled")
            chunk = same_size[start : start + per_batch]
            notify("network", done / len(plans))
            network_start = time.perf_counter()
            fills = _run_network(image, mask, model, chunk)
            report.network_seconds += time.perf_counter() - network_start
            blend_start = time.perf_counter()
            for plan, fill in zip(chunk, fills, strict=True):
                if should_cancel is not None and should_cancel():
                    raise CancelledError("cancelled")
                _write_back(result, origin, image, mask, plan, fill, blend, border)
            report.blend_seconds += time.perf_counter() - blend_start
            done += len(chunk)
    notify("done", 1.0)
    report.total_seconds = time.perf_counter() - started
    return CompletedRegion(origin[0], origin[1], result)


def complete_region(
    image: np.ndarray, mask: np.ndarray, model: CompletionModel, **options
) -> CompletedRegion:
    """Like `complete`, but returns only the mask's bounding box, so a caller that sends the
    change elsewhere (the daemon) never copies the whole image."""
    return _complete(image, mask, model, "region", **options)


def _validate(
    image: np.ndarray, mask: np.ndarray, blend: str, margin: int, max_working_side: int
) -> None:
    if not isinstance(image, np.ndarray) or not isinstance(mask, np.ndarray):
        raise InputError("image and mask must be NumPy arrays")
    if image.dtype != np.uint8:
        raise InputError(f"image must be 8-bit (uint8), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"image must be HxWx3 (RGB) or HxWx4 (RGBA), got shape {image.shape}")
    if mask.dtype != np.uint8:
        raise InputError(f"mask must be 8-bit (uint8), got {mask.dtype}")
    if mask.ndim != 2:
        raise InputError(f"mask must be HxW (one channel), got shape {mask.shape}")
    if mask.shape != image.shape[:2]:
        raise InputError(
            f"image is {image.shape[1]}x{image.shape[0]} but mask is "
            f"{mask.shape[1]}x{mask.shape[0]}; they must be the same size"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError("image is empty")
    if mask.max() == 1:
        raise InputError(
            "mask values are 0 and 1; use 255 for pixels to fill (values between 1 and 254 "
            "are a partial, feathered selection)"
        )
    if blend not in BLEND_MODES:
        raise InputError(f"blend must be one of {', '.join(BLEND_MODES)}, got {blend!r}")
    if margin < 0:
        raise InputError(f"margin must not be negative, got {margin}")
    if max_working_side < 2 * margin + 64:
        raise InputError(
            f"max_working_side {max_working_side} is too small for margin {margin} "
            f"(needs at least {2 * margin + 64})"
        )


def _check_known_context(mask: np.ndarray, plan: CropPlan) -> None:
    crop = mask[plan.crop.slices]
    known = crop.size - cv2.countNonZero(crop)
    if known < MIN_KNOWN_FRACTION * crop.size:
        box = plan.group.box
        raise InputError(
            f"the hole at x={box.x0}, y={box.y0} ({box.width}x{box.height}) leaves almost no "
            "known pixels around it to complete from; select a smaller region"
        )


def _working_crop(image: np.ndarray, mask: np.ndarray, plan: CropPlan) -> tuple[np.ndarray, ...]:
    """The crop's RGB and 0/1 hole mask at working resolution, padded to a multiple of 4."""
    rgb = image[plan.crop.slices][..., :3]
    hole = (mask[plan.crop.slices] > 0).astype(np.uint8)
    if plan.scale < 1.0:
        size = (plan.working_size[1], plan.working_size[0])
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        # Any working pixel that a hole pixel touches is a hole: nothing under the hole leaks in.
        hole = (cv2.resize(hole * 255, size, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)
    pad_bottom = plan.padded_size[0] - plan.working_size[0]
    pad_right = plan.padded_size[1] - plan.working_size[1]
    if pad_bottom or pad_right:
        rgb = cv2.copyMakeBorder(rgb, 0, pad_bottom, 0, pad_right, cv2.BORDER_REPLICATE)
        hole = cv2.copyMakeBorder(hole, 0, pad_bottom, 0, pad_right, cv2.BORDER_REPLICATE)
    return rgb, hole


def _context_offsets(
    crops: list[tuple[np.ndarray, np.ndarray]],
    plans: list[CropPlan],
    mean: torch.Tensor,
    fraction: float,
) -> torch.Tensor:
    """Per working crop, the colour offset (N, 3, 1, 1) that moves the mean of its known pixels
    (padding excluded) `fraction` of the way to the model's mean colour (see
    `ModelMetadata.context_shift`). A crop left without known pixels at working size (scaling
    down merged them all into the hole) gets none."""
    offsets = torch.zeros(len(crops), 3, 1, 1, device=mean.device)
    for index, ((rgb, hole), plan) in enumerate(zip(crops, plans, strict=True)):
        height, width = plan.working_size
        known = (hole[:height, :width] == 0).view(np.uint8)
        if cv2.countNonZero(known):
            colour = cv2.mean(np.ascontiguousarray(rgb[:height, :width]), mask=known)[:3]
            known_mean = torch.tensor(colour, dtype=torch.float32, device=mean.device) / 255.0
            offsets[index] = (fraction * (mean - known_mean)).view(3, 1, 1)
    return offsets


def _run_network(
    image: np.ndarray, mask: np.ndarray, model: CompletionModel, plans: list[CropPlan]
) -> list[np.ndarray]:
    """Network output (HxWx3 float32 in [0, 1]) for each crop, at the crop's image size."""
    device = model.device
    crops = [_working_crop(image, mask, plan) for plan in plans]
    rgb = torch.from_numpy(np.stack([c[0] for c in crops])).to(device)
    hole = torch.from_numpy(np.stack([c[1] for c in crops])).to(device)
    rgb = rgb.permute(0, 3, 1, 2).float().div_(255.0)
    hole = hole.unsqueeze(1).float()
    mean = model.mean
    shift = model.metadata.context_shift
    if shift:
        offsets = _context_offsets(crops, plans, mean, shift)
        rgb = rgb.add_(offsets).clamp_(0.0, 1.0)
    network_input = prepare_input(rgb, hole, mean).contiguous(memory_format=torch.channels_last)
    if model.network.training:
        raise GlcicError("the model's network is in training mode; call .eval() first")
    network = model.inference_network()
    with torch.inference_mode(), model.precision.autocast(device):
        output = network(network_input).float()
        if shift:
            output = output.sub_(offsets).clamp_(0.0, 1.0)
    output = output.permute(0, 2, 3, 1).cpu().numpy()
    fills = []
    for plan, out in zip(plans, output, strict=True):
        out = out[: plan.working_size[0], : plan.working_size[1]]
        if plan.scale < 1.0:
            size = (plan.crop.width, plan.crop.height)
            out = cv2.resize(out, size, interpolation=cv2.INTER_CUBIC)
        fills.append(out)
    return fills


def _write_back(
    result: np.ndarray,
    origin: tuple[int, int],
    image: np.ndarray,
    mask: np.ndarray,
    plan: CropPlan,
    fill: np.ndarray,
    blend: str,
    border: str,
) -> None:
    """Blend one crop's fill into `result`, inside its own hole group's box only; `border` is
    the model's `border_blend`.

    Blending needs only the hole and a thin ring of known pixels around it (the Poisson boundary
    and Telea's neighbourhood), so it works on that window rather than the whole context crop.
    """
    crop, box = plan.crop, plan.group.box
    window = Box(
        max(crop.x0, box.x0 - _BLEND_RING),
        max(crop.y0, box.y0 - _BLEND_RING),
        min(crop.x1, box.x1 + _BLEND_RING),
        min(crop.y1, box.y1 + _BLEND_RING),
    )
    original = image[window.slices][..., :3]
    selection = mask[window.slices]
    hole = np.where(selection > 0, np.uint8(255), np.uint8(0))
    inside = hole > 0
    filled = original.copy()
    window_fill = fill[window.offset(-crop.x0, -crop.y0).slices]
    filled[inside] = np.clip(window_fill[inside] * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if blend == "poisson":
        depth = round(MIRROR_DEPTH / plan.scale)  # the same reach at every working scale
        height, width = image.shape[:2]
        edges = (window.y0 == 0, window.y1 == height, window.x0 == 0, window.x1 == width)
        filled = poisson_blend(original, filled, hole, border, depth, edges)
    # Other groups' holes may fall inside this window; each group writes only its own box.
    region = box.offset(-window.x0, -window.y0).slices
    blended = composite_soft(original[region], filled[region], selection[region])
    result[box.offset(-origin[0], -origin[1]).slices][..., :3] = blended
