"""Export a training run's completion network as a model file in the daemon's model directory."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from glcic.errors import GlcicError
from glcic.model_file import CompletionModel, ModelMetadata, Provenance, save_model
from glcic.networks import CompletionNetwork
from glcic.paths import models_dir
from glcic.training.checkpoint import load_latest_checkpoint
from glcic.training.config import TrainConfig

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

DATA_TERMS = "trained on the data listed under 'data'; the weights carry that data's terms of use"


class ExportError(GlcicError):
    """The run cannot be exported under that name."""


def phase_steps(config: TrainConfig, step: int) -> dict[str, int]:
    """How many steps of each phase a run that reached `step` has done."""
    completion = min(step, config.completion_steps)
    discriminator = min(max(0, step - config.completion_steps), config.discriminator_steps)
    joint = max(0, step - config.completion_steps - config.discriminator_steps)
    return {"completion": completion, "discriminator": discriminator, "joint": joint}


def model_from_checkpoint(
    state: dict[str, Any],
    evaluation: str = "",
    terms: str = "",
    notes: str = "",
    context_shift: float = 0.0,
) -> CompletionModel:
    """The completion network of a checkpoint, with metadata a user of the file can read.

    `terms` states the training data's terms of use in words (e.g. "research use only"); the
    weights inherit them, so they go into the file's licence field, not only into a model card.
    """
    config = TrainConfig(**state["config"])
    network = CompletionNetwork(config.width)
    network.load_state_dict(state["completion"])
    network.eval()
    licence = (
        f"trained on data whose terms are: {terms}; the weights carry them" if terms else DATA_TERMS
    )
    if state.get("init_licence"):
        licence += f"; fine-tuned from weights licensed {state['init_licence']}"
    extra: dict[str, Any] = {"training_config": config.to_dict()}
    if evaluation:
        extra["evaluation"] = evaluation
    metadata = ModelMetadata(
        width=config.width,
        mean=tuple(state["mean"]),
        train_image_size=config.image_size,
        hole_size_range=(config.hole_min, config.hole_max),
        context_shift=context_shift,
        provenance=Provenance(
            source="glcic-train"
            + (f" (from {state['init_source']})" if state.get("init_source") else ""),
            data=", ".join(state.get("data_dirs", [])),
            steps=phase_steps(config, int(state["step"])),
            licence=licence,
        ),
        notes=notes,
        extra=extra,
    )
    return CompletionModel(network, metadata)


def last_evaluation(run_dir: Path) -> str:
    """The Markdown table of the run's latest glcic-eval, if it was written into RUN_DIR/eval."""
    table = run_dir / "eval" / "results.md"
    if table.is_file():
        return table.read_text(encoding="utf-8")
    results = run_dir / "eval" / "results.json"
    if results.is_file():
        return json.dumps(json.loads(results.read_text(encoding="utf-8")).get("summary", {}))
    return ""


def export_run(
    run_dir: Path,
    name: str | None,
    storage: str = "float32",
    *,
    out: Path | None = None,
    terms: str = "",
    notes: str = "",
    context_shift: float = 0.0,
) -> Path:
    """Write RUN_DIR's latest completion network, atomically, to `out` or to
    <models dir>/<name>.safetensors (where the daemon picks it up)."""
    if out is None:
        if name is None or not _NAME.match(name):
            raise ExportError(
                f"model name {name!r} must be letters, digits, '.', '_' or '-' (at most 100)"
            )
        target = models_dir() / f"{name}.safetensors"
    else:
        if out.suffix != ".safetensors":
            raise ExportError(f"{out}: a model file's name must end in .safetensors")
        target = out
    state = load_latest_checkpoint(run_dir)
    model = model_from_checkpoint(
        state, last_evaluation(run_dir), terms=terms, notes=notes, context_shift=context_shift
    )
    save_model(model, target, storage=storage)
    return target
