"""Per-user locations, from platformdirs under the app name "glcic".

One environment variable, GLCIC_HOME, replaces all of them with folders under one root: tests
use it to stay out of the user's real folders, and it makes a portable install possible.
Nothing is ever written to the current directory. The daemon's runtime folder (its connection
file and lock) is not decided here: its rule lives with the wire protocol
(glcic.daemon.protocol.default_runtime_dir), which plugins run without the rest of glcic, so the
daemon writes exactly where every client looks.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "glcic"
#: The extension of model files; names in the model directory are file names without it.
MODEL_SUFFIX = ".safetensors"
HOME_VARIABLE = "GLCIC_HOME"


def _home() -> Path | None:
    value = os.environ.get(HOME_VARIABLE)
    return Path(value).expanduser().resolve() if value else None


def models_dir() -> Path:
    """Where the daemon and the CLI look for model files (`glcic-train export` writes here)."""
    home = _home()
    return home / "models" if home else platformdirs.user_data_path(APP_NAME) / "models"


def log_dir() -> Path:
    home = _home()
    return home / "logs" if home else platformdirs.user_log_path(APP_NAME)
