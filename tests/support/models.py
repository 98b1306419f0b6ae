"""Tiny random-weight models keep the tests fast on CPU."""

from __future__ import annotations

import torch

from glcic import CompletionModel, ModelMetadata, new_model


def make_tiny_model(seed: int = 0, hole_size_range: tuple[int, int] = (48, 64)) -> CompletionModel:
    torch.manual_seed(seed)
    return new_model(
        ModelMetadata(width=0.125, train_image_size=128, hole_size_range=hole_size_range)
    )
