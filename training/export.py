"""Export a training run's completion network as a model file in the daemon's model directory.

An export is what users complete images with, so it says what it is: the provenance names the
file a fine-tuned run started from and that file's terms beside the new data's, and the exporter
warns before it installs something a user would regret (a run cut short, an existing model
replaced, the built-in default shadowed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from glcic.default_model import DEFAULT_MODEL_NAME
from glcic.errors import GlcicError
from glcic.model_file import CompletionModel, ModelMetadata, Provenance, save_model
from glcic.networks import CompletionNetwork
from glcic.paths import models_dir
from glcic.training.checkpoint import load_latest_checkpoint
from glcic.training.config import TrainConfig, border_blend_for

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

DATA_TERMS = "trained on the data listed under 'data'; the weights carry that data's terms of use"

#: Below this many completion steps from random weights, a network fills holes with a smear.
MIN_FROM_SCRATCH_STEPS = 2_000


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
    border_blend: str = "telea",
    data_names: str = "",
    init_name: str = "",
) -> CompletionModel:
    """The completion network of a checkpoint, with metadata a user of the file can read.

    `terms` states the training data's terms of use in words (e.g. "research use only"); the
    weights inherit them, so they go into the file's licence field, not only into a model card.
    `data_names` and `init_name` name the training data and the `--init` model for the file's
    readers; without them the file names the run's folders and the init model's path, which
    mean something only on the machine that trained it.
    """
    if init_name:
        state = {**state, "init_source": init_name}
    config = TrainConfig(**state["config"])
    network = CompletionNetwork(config.width)
    network.load_state_dict(state["completion"])
    network.eval()
    licence = (
        f"trained on data whose terms are: {terms}; the weights carry them" if terms else DATA_TERMS
    )
    if state.get("init_source") or state.get("init_licence"):
        origin = _init_description(state)
        own = state.get("init_licence")
        licence += f". Fine-tuned from {origin}, " + (
            f'whose licence reads: "{own}"' if own else "whose licence is not stated in it"
        )
    extra: dict[str, Any] = {"training_config": config.to_dict()}
    if evaluation:
        extra["evaluation"] = evaluation
    metadata = ModelMetadata(
        width=config.width,
        mean=tuple(state["mean"]),
        train_image_size=config.image_size,
        hole_size_range=(config.hole_min, config.hole_max),
        context_shift=context_shift,
        border_blend=border_blend,
        provenance=Provenance(
            source="glcic-train"
            + (f", fine-tuned from {_init_description(state)}" if state.get("init_source") else ""),
            data=data_names or ", ".join(state.get("data_dirs", [])),
            steps=phase_steps(config, int(state["step"])),
            licence=licence,
        ),
        notes=notes,
        extra=extra,
    )
    return CompletionModel(network, metadata)


def _init_description(state: dict[str, Any]) -> str:
    """The model a run was fine-tuned from, in words.

    Runs record the file (``init_source``) and what made it (``init_origin``). Runs started
    before that recorded only what made the file, often just "glcic-train".
    """
    source = state.get("init_source", "")
    origin = state.get("init_origin")
    if origin is None:
        # What such runs recorded: the file's own source, or "init model" where it had none.
        known = source and source != "init model"
        return f"a model made by {source}" if known else "a model file the run did not name"
    return f"{source}, made by {origin}" if origin else source


def inherited_context_shift(state: dict[str, Any]) -> float:
    """The context shift of the model a run was fine-tuned from (0 for a run from scratch): the
    weights still complete best with the colour treatment they were tuned for."""
    return float(state.get("init_context_shift", 0.0))


def trained_border_blend(state: dict[str, Any]) -> str:
    """How the pipeline should blend this run's fills at the image edge (`border_blend_for`)."""
    return border_blend_for(TrainConfig(**state["config"]), state.get("init_border_blend"))


def export_warnings(
    state: dict[str, Any], name: str | None, run_dir: Path | str = "RUN"
) -> list[str]:
    """What a user should hear before using this export: a run cut short, a network trained
    too briefly, the built-in default model shadowed."""
    config = TrainConfig(**state["config"])
    step = int(state["step"])
    steps = phase_steps(config, step)
    fine_tuned = bool(state.get("init_source") or state.get("init_licence"))
    warnings = []
    if step < config.total_steps:
        planned = phase_steps(config, config.total_steps)
        missing = [
            phase for phase in ("discriminator", "joint") if planned[phase] and not steps[phase]
        ]
        warnings.append(
            f"the run stopped at step {step:,} of {config.total_steps:,}"
            + (
                f"; its {' and '.join(missing)} phase{'s' if len(missing) > 1 else ''} never "
                "ran, so fills will be smoother than the finished run's"
                if missing
                else ""
            )
            + f" (continue it with 'glcic-train run --out {run_dir} --resume')"
        )
    if not fine_tuned and steps["completion"] < MIN_FROM_SCRATCH_STEPS:
        warnings.append(
            f"trained from scratch for only {steps['completion']:,} completion steps: "
            f"expect blurred, wrongly coloured fills (a usable model needs many thousands; "
            "fine-tune an existing model with --init for short runs)"
        )
    if name == DEFAULT_MODEL_NAME:
        warnings.append(
            f"the name {DEFAULT_MODEL_NAME!r} replaces the built-in default model for every "
            "command and the daemon that use the default (delete the file to get it back)"
        )
    return warnings


def last_evaluation(run_dir: Path) -> str:
    """The Markdown table of the run's latest glcic-eval, if it was written into RUN_DIR/eval."""
    table = run_dir / "eval" / "results.md"
    if table.is_file():
        return table.read_text(encoding="utf-8")
    results = run_dir / "eval" / "results.json"
    if results.is_file():
        return json.dumps(json.loads(results.read_text(encoding="utf-8")).get("summary", {}))
    return ""


def export_target(name: str | None, out: Path | None, force: bool) -> Path:
    """Where an export goes: `out`, or <models dir>/<name>.safetensors; `ExportError` for a
    bad name, or for a file that exists unless `force`."""
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
    if target.exists() and not force:
        raise ExportError(
            f"{target} already exists; pass --force to replace it, or choose another "
            + ("--name" if out is None else "--out")
        )
    return target


def export_run(
    run_dir: Path,
    name: str | None,
    storage: str = "float32",
    *,
    out: Path | None = None,
    terms: str = "",
    notes: str = "",
    context_shift: float | None = None,
    border_blend: str | None = None,
    data_names: str = "",
    init_name: str = "",
    force: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """Write RUN_DIR's latest completion network, atomically, to `out` or to
    <models dir>/<name>.safetensors (where the daemon picks it up).

    An existing file is replaced only with `force`. `context_shift` None keeps the one of the
    model the run was fine-tuned from; `border_blend` None, `trained_border_blend`'s. Each
    `export_warnings` message goes to `warn`.
    """
    target = export_target(name, out, force)
    state = load_latest_checkpoint(run_dir)
    if init_name and not state.get("init_source"):
        raise ExportError(f"--init-name: {run_dir} was not fine-tuned from a model (no --init)")
    for message in export_warnings(state, name if out is None else None, run_dir):
        (warn or (lambda text: None))(message)
    shift = inherited_context_shift(state) if context_shift is None else context_shift
    model = model_from_checkpoint(
        state,
        last_evaluation(run_dir),
        terms=terms,
        notes=notes,
        context_shift=shift,
        border_blend=border_blend or trained_border_blend(state),
        data_names=data_names,
        init_name=init_name,
    )
    save_model(model, target, storage=storage)
    return target
