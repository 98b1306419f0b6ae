"""What a fine-tuning run (`--init MODEL`) takes over from the model it starts from.

Weights only fit the regime they were trained in: the network's width, the crop size and the
rescaling its photos went through, and the size and kind of holes it learnt to fill. Fine-tuning
a half-width model trained on 128 px crops with 24-96 px free-form holes at the paper's 256 px
crops and 96-128 px rectangles (the config's defaults) throws much of that learning away. So a
run started with `--init` takes these settings from the model file, and only a value the user
chose (a flag, or a `--config` file) replaces one; the run's log says which were which.

Files written by `glcic-train export` carry the run's whole config (``extra.training_config``);
other files (imported Torch7 weights, older exports) carry only width, training image size and
hole sizes, from which the rest is inferred the way the paper and our recipes relate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from glcic.model_file import ModelMetadata

#: The config fields that shape the network, the training crops and the holes.
SHAPE_FIELDS = (
    "width",
    "image_size",
    "rescale_min",
    "rescale_max",
    "flip",
    "local_size",
    "hole_min",
    "hole_max",
    "freeform_fraction",
    "edge_hole_fraction",
)

#: The paper's rescaling range relative to the crop: shorter side in [256, 384] for 256 crops.
_RESCALE_MAX_FACTOR = 1.5


@dataclass(frozen=True)
class Inheritance:
    """The settings a fine-tuning run takes from its model file, and where each came from."""

    values: dict[str, Any]
    #: Fields the file did not record and that were derived from those it did.
    inferred: tuple[str, ...] = ()
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    context_shift: float = 0.0


def inherit_from(metadata: ModelMetadata) -> Inheritance:
    """The shape fields (`SHAPE_FIELDS`), mean colour and context shift of a model file."""
    recorded = metadata.extra.get("training_config")
    values: dict[str, Any] = {}
    inferred: list[str] = []
    if isinstance(recorded, dict):
        values = {name: recorded[name] for name in SHAPE_FIELDS if name in recorded}
    # The header's own fields are authoritative: the loader checked them against the weights.
    values["width"] = metadata.width
    values["image_size"] = metadata.train_image_size
    values["hole_min"], values["hole_max"] = metadata.hole_size_range
    derived = {
        "local_size": values["hole_max"],
        "rescale_min": values["image_size"],
        "rescale_max": round(values["image_size"] * _RESCALE_MAX_FACTOR),
    }
    for name, value in derived.items():
        if name not in values:
            values[name] = value
            inferred.append(name)
    return Inheritance(
        values=values,
        inferred=tuple(inferred),
        mean=metadata.mean,
        context_shift=metadata.context_shift,
    )


def describe(
    model: str, inheritance: Inheritance, overridden: dict[str, Any], config_values: dict[str, Any]
) -> str:
    """The log line of what a run inherited from `model` and what the user chose instead."""
    kept = [
        f"{name} {_show(config_values[name])}"
        for name in SHAPE_FIELDS
        if name in inheritance.values and name not in overridden
    ]
    text = (
        f"--init {model}: inherited {', '.join(kept) or 'no shape setting'}, "
        f"mean colour ({', '.join(f'{v:.4f}' for v in inheritance.mean)}), "
        f"context shift {inheritance.context_shift:g} (used by export)"
    )
    if inheritance.inferred:
        text += f"; not recorded in the file, so inferred: {', '.join(inheritance.inferred)}"
    if overridden:
        changes = ", ".join(
            f"{name} {_show(value)} (model: {_show(inheritance.values[name])})"
            for name, value in overridden.items()
        )
        text += f"; overridden by you: {changes}"
    return text


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
