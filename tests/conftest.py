"""Shared fixtures: tiny random-weight models keep the tests fast on CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from glcic import CompletionModel, ModelMetadata, new_model, save_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def make_tiny_model(seed: int = 0, hole_size_range: tuple[int, int] = (48, 64)) -> CompletionModel:
    torch.manual_seed(seed)
    return new_model(
        ModelMetadata(width=0.125, train_image_size=128, hole_size_range=hole_size_range)
    )


@pytest.fixture
def tiny_model() -> CompletionModel:
    return make_tiny_model()


@pytest.fixture
def tiny_model_file(tmp_path: Path, tiny_model: CompletionModel) -> Path:
    path = tmp_path / "tiny.safetensors"
    save_model(tiny_model, path)
    return path


@pytest.fixture
def photo() -> np.ndarray:
    """A smooth, structured RGB test image (no external files needed)."""
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    r = 128 + 100 * np.sin(xx / 37.0)
    g = 128 + 100 * np.cos(yy / 23.0)
    b = (xx + yy) / 560.0 * 255
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def shared_data(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path
