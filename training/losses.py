"""The reconstruction loss, shared by training and by adapting a model to one image."""

from __future__ import annotations

import torch


def hole_mse(output: torch.Tensor, target: torch.Tensor, hole: torch.Tensor) -> torch.Tensor:
    """Squared error averaged over hole pixels (and channels) only, as the paper's weighted MSE.

    Averaging over all pixels instead would shrink the loss by the hole's share of the image.
    """
    squared = (output - target).pow(2) * hole
    return squared.sum() / (hole.sum() * output.shape[1]).clamp_min(1.0)
