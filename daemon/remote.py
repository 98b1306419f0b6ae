"""Completing through the daemon while sending only the pixels the pipeline will read.

The pipeline reads an image only inside its crops, and the crops follow from the mask and the
model's trained hole sizes alone. So a client with the full package plans the same crops, sends
the sub-image that holds them all, and gets the same result, bit for bit, as for the whole image:
every crop lies inside that sub-image at the same place. For a small hole in a large photo
this cuts what is signed, sent and checked from the whole layer to a few megabytes.
"""

from __future__ import annotations

import numpy as np

from glcic.crops import Box, find_hole_groups, plan_crop
from glcic.daemon.client import Client
from glcic.networks import RECEPTIVE_FIELD_RADIUS
from glcic.pipeline import DEFAULT_MAX_WORKING_SIDE, CompletedRegion


def needed_region(mask: np.ndarray, max_hole_side: int) -> Box | None:
    """The smallest box holding every crop the pipeline will use; None if the mask is empty."""
    groups = find_hole_groups(mask, merge_distance=RECEPTIVE_FIELD_RADIUS)
    if not groups:
        return None
    region = None
    for group in groups:
        crop = plan_crop(
            group, mask.shape, max_hole_side, RECEPTIVE_FIELD_RADIUS, DEFAULT_MAX_WORKING_SIDE
        ).crop
        region = crop if region is None else region.union(crop)
    return region


def _model_hole_limit(client: Client, model: str | None) -> int | None:
    for entry in client.models():
        if (entry["name"] == model or (model is None and entry["default"])) and entry["metadata"]:
            return int(entry["metadata"]["hole_size_range"][1])
    return None


def complete_remote(
    client: Client,
    rgba: np.ndarray,
    mask: np.ndarray,
    model: str | None = None,
    blend: str = "poisson",
    **options,
) -> CompletedRegion:
    """Complete an HxWx4 uint8 image through the daemon; returns the changed rectangle."""
    limit = _model_hole_limit(client, model)
    region = needed_region(mask, limit) if limit is not None else None
    if region is None:  # unknown model or empty mask: send everything, the daemon decides
        region = Box(0, 0, mask.shape[1], mask.shape[0])
    sub_rgba = np.ascontiguousarray(rgba[region.slices])
    sub_mask = np.ascontiguousarray(mask[region.slices])
    result = client.complete(
        sub_mask.shape[1], sub_mask.shape[0], sub_rgba.tobytes(), sub_mask.tobytes(),
        model=model, blend=blend, **options,
    )  # fmt: skip
    pixels = np.frombuffer(result.rgba, np.uint8).reshape(result.height, result.width, 4)
    return CompletedRegion(region.x0 + result.x, region.y0 + result.y, pixels)
