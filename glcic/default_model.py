"""Which model to use when the user names none: the one shipped inside the package."""

from __future__ import annotations

from pathlib import Path

from glcic.errors import ModelFileError

#: The embedded default model, shipped as package data.
PACKAGED_MODEL = Path(__file__).parent / "models" / "default.safetensors"


def default_model_path() -> Path:
    if PACKAGED_MODEL.is_file():
        return PACKAGED_MODEL
    raise ModelFileError(
        "no model given and no default model is installed; pass --model PATH (for example a "
        "file made with 'glcic import-t7' or exported by 'glcic-train')"
    )
