"""Shared fixtures: tiny random-weight models keep the tests fast on CPU.

Helpers that tests import live in tests/support/, not here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.models import make_tiny_model

from glcic import CompletionModel, save_model


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
