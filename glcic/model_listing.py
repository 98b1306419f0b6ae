"""Listing models for people: the same lines from the running daemon or from the folder alone.

`glcic models` and `glcic-daemon models` (with or without a daemon) print one line per model
from the same description: the daemon's `models` reply, or `folder_models`, which reads only
each file's header (cheap, and a file whose header is bad is listed with the reason).
"""

from __future__ import annotations

import shutil
import textwrap
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


def describe_model(path: Path, metadata: dict[str, Any], size_bytes: int) -> list[str]:
    """`glcic info`'s lines for people: what the weights are, how they blend, where they came
    from and what they may be used for, then the evaluation stored with the file.

    The metadata is JSON for programs (`glcic info --json`); read raw, its licence and
    evaluation are single lines hundreds of characters long, so here they are wrapped to the
    terminal and the evaluation table is printed as the Markdown it is.
    """
    width = max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))
    # `ModelMetadata.to_json` always writes these, defaults included.
    provenance = metadata["provenance"]
    holes = metadata["hole_size_range"]
    fields = [
        (
            "network",
            f"width {metadata['width']:g} of the paper's, trained on "
            f"{metadata['train_image_size']} px crops with holes of {holes[0]}-{holes[1]} px",
        ),
        (
            "completion",
            f"context shift {metadata['context_shift']:g}, "
            f"image edges blended by {metadata['border_blend']}",
        ),
        ("made by", provenance["source"]),
        ("data", provenance["data"]),
        ("steps", ", ".join(f"{phase} {count:,}" for phase, count in provenance["steps"].items())),
        ("licence", provenance["licence"]),
        ("notes", metadata["notes"]),
    ]
    label_width = max(len(label) for label, _ in fields) + 2
    # The path stays on one line, whatever its length, so it can be copied.
    lines = ["file".ljust(label_width) + f"{path} ({size_bytes / 1e6:.1f} MB)"]
    for label, value in fields:
        if not value:
            continue
        lines.extend(
            textwrap.wrap(
                str(value),
                width=width,
                initial_indent=label.ljust(label_width),
                subsequent_indent=" " * label_width,
                break_on_hyphens=False,
                break_long_words=False,
            )
        )
    extra = metadata["extra"]
    evaluation = extra.get("evaluation")
    if isinstance(evaluation, str) and evaluation.strip():
        lines += ["", "evaluation stored with the file:"]
        for line in evaluation.strip().splitlines():
            # Table rows stay whole (a wrapped row is no row); prose is wrapped.
            if line.lstrip().startswith("|"):
                lines.append(line)
            else:
                wrapped = textwrap.wrap(line, width, break_on_hyphens=False, break_long_words=False)
                lines.extend(wrapped or [""])
    elif evaluation is not None:
        lines += ["", "an evaluation is stored with the file: glcic info --json"]
    if "training_config" in extra:
        lines += ["", "the full training configuration: glcic info --json"]
    return lines
