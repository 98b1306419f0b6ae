"""Which model to use when the user names none.

The daemon and the CLI agree: a file named `default.safetensors` in the user's model directory
(for example a studio's own model, `glcic-train export RUN --name default`) wins; otherwise the
model shipped inside the package is used, so a fresh install completes images with no setup.
"""

from __future__ import annotations

from pathlib import Path

from glcic.errors import ModelFileError
from glcic.paths import models_dir

#: The embedded default model, shipped as package data (see models/MODEL_CARD.md).
PACKAGED_MODEL = Path(__file__).parent / "models" / "default.safetensors"

#: The name under which the daemon lists the packaged model; a user file of that name replaces it.
DEFAULT_MODEL_NAME = "default"


def default_model_path() -> Path:
    """The user's `default` model if there is one, else the packaged one."""
    own = models_dir() / f"{DEFAULT_MODEL_NAME}.safetensors"
    if own.is_file():
        return own
    if PACKAGED_MODEL.is_file():
        return PACKAGED_MODEL
    raise ModelFileError(
        "no model given and no default model is installed; pass --model PATH (for example a "
        "file made with 'glcic import-t7' or exported by 'glcic-train')"
    )
