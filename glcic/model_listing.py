"""Listing models for people: the same lines from the running daemon or from the folder alone.

`glcic models` and `glcic-daemon models` (with or without a daemon) print one line per model
from the same description: the daemon's `models` reply, or `folder_models`, which reads only
each file's header (cheap, and a file whose header is bad is listed with the reason).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from glcic.default_model import DEFAULT_MODEL_NAME
from glcic.errors import GlcicError
from glcic.model_file import read_model_metadata
from glcic.model_names import available_models


def folder_models(directory: Path | None = None) -> list[dict[str, Any]]:
    """The models names resolve to, described as the daemon's `models` reply describes them.

    `default` is marked as the default: without a daemon (or its `start --model`), a command
    given no model uses it.
    """
    described = []
    for model in available_models(directory):
        entry: dict[str, Any] = {
            "name": model.name,
            "path": str(model.path),
            "builtin": model.builtin,
            "default": model.name == DEFAULT_MODEL_NAME,
            "loaded": False,
            "size_bytes": 0,
            "metadata": None,
            "error": None,
        }
        try:
            entry["size_bytes"] = model.path.stat().st_size
            entry["metadata"] = read_model_metadata(model.path).to_json()
        except GlcicError as error:
            entry["error"] = str(error)
        except OSError as error:
            entry["error"] = f"{model.path}: cannot be read ({error.strerror or error})"
        described.append(entry)
    return described


def format_models(models: list[dict[str, Any]]) -> list[str]:
    """One line per model (a star marks the default), plus its licence when it names one."""
    if not models:
        return ["no models (put .safetensors files in the model folder)"]
    lines = []
    for model in models:
        meta = model.get("metadata") or {}
        mark = "* " if model.get("default") else "  "
        origin = "built-in" if model.get("builtin") else model.get("path", "?")
        size = model.get("size_bytes", 0) / 1e6
        if meta:
            detail = (
                f"width {meta.get('width', '?')}, trained at "
                f"{meta.get('train_image_size', '?')} px, holes {meta.get('hole_size_range', '?')}"
            )
        else:
            error = model.get("error")
            detail = f"CANNOT BE USED: {error}" if error else "not loaded yet"
        lines.append(f"{mark}{model['name']}  {size:.1f} MB  {detail}  ({origin})")
        licence = (meta.get("provenance") or {}).get("licence") if meta else None
        if licence:
            lines.append(f"    licence: {licence}")
    return lines
