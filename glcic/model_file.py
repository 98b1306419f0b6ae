"""Model files: the completion network's weights plus everything needed to use them well.

A model file is a safetensors file. safetensors holds only a JSON header and raw tensor bytes, so
loading one can never execute code (unlike pickle-based ``.pt`` files). Our metadata lives in the
header under the key ``glcic`` as one JSON document; the format version there lets later releases
read older files and refuse newer ones with a clear message.

Loading checks, in order: the file exists and is safetensors; it carries glcic metadata of a
known format version and architecture; every expected tensor is present, no unexpected one is,
every shape matches the architecture, and every value is finite. Each failure names what is wrong.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from glcic.atomic import atomic_write_with
from glcic.blending import BORDER_BLENDS
from glcic.errors import ModelFileError
from glcic.networks import PLACES2_MEAN, CompletionNetwork, FusedCompletionNetwork
from glcic.paths import MODEL_SUFFIX as MODEL_SUFFIX  # kept here too: the file format names it
from glcic.precision import FLOAT32, Precision, resolve_precision
from glcic.tensor_file import open_tensor_file

FORMAT_VERSION = 1
ARCHITECTURE = "glcic-completion-v1"
METADATA_KEY = "glcic"
#: The largest training image or hole side a model file may claim, in pixels.
MAX_IMAGE_SIDE = 8192

_STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass(frozen=True)
class Provenance:
    """Where the weights came from: data, training steps per phase, and the terms they carry."""

    source: str = ""  # e.g. "glcic-train", "import-t7 completionnet_places2.t7"
    data: str = ""
    steps: dict[str, int] = field(default_factory=dict)
    licence: str = ""


@dataclass(frozen=True)
class ModelMetadata:
    """What a user of the weights must know: architecture, input statistics, trained regime."""

    width: float = 1.0
    mean: tuple[float, float, float] = PLACES2_MEAN
    train_image_size: int = 256
    hole_size_range: tuple[int, int] = (96, 128)
    #: How far (0 to 1) the pipeline moves each crop's known colours toward `mean` before the
    #: network runs, undoing it on the output. A network trained with holes filled by `mean`
    #: completes dark or strongly tinted scenes better when they look more like its training
    #: data; the right amount is a property of the weights, measured when they are exported.
    #: 0 (files without the field, imported weights) runs the network on the colours as they are.
    context_shift: float = 0.0
    #: How Poisson blending treats a hole at the image edge (`glcic.blending.BORDER_BLENDS`):
    #: like the context shift, a property of how the weights were trained. "telea" (files
    #: without the field) pins the edge to a fast-marching fill; "mirror" leaves it free.
    border_blend: str = "telea"
    provenance: Provenance = field(default_factory=Provenance)
    notes: str = ""
    #: Free-form, JSON-serialisable additions (evaluation tables, training config, ...).
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Checked here, not only when a file is read, so no code path can write a file that
        # would then refuse to load.
        if not 0.0 <= self.context_shift <= 1.0:
            raise ValueError(f"context_shift {self.context_shift} is outside [0, 1]")
        _check_border_blend(self.border_blend)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        document["mean"] = list(self.mean)
        document["hole_size_range"] = list(self.hole_size_range)
        return document

    @classmethod
    def from_json(cls, document: Any) -> ModelMetadata:
        """Parse and validate; raises `ValueError` naming the first bad field."""
        if not isinstance(document, dict):
            raise ValueError("metadata is not a JSON object")
        width = _number(document.get("width"), "width")
        if not 0.0 < width <= 4.0:
            raise ValueError(f"width {width} is outside (0, 4]")
        mean = document.get("mean")
        if not (isinstance(mean, list) and len(mean) == 3):
            raise ValueError("mean must be a list of three numbers")
        mean_values = tuple(_number(value, "mean") for value in mean)
        if not all(0.0 <= value <= 1.0 for value in mean_values):
            raise ValueError(f"mean {list(mean_values)} is outside [0, 1] (colours are 0 to 1)")
        size = document.get("train_image_size")
        if not (_is_int(size) and 0 < size <= MAX_IMAGE_SIDE):
            raise ValueError(f"train_image_size must be an integer from 1 to {MAX_IMAGE_SIDE}")
        holes = document.get("hole_size_range")
        if not (
            isinstance(holes, list)
            and len(holes) == 2
            and all(_is_int(value) and 0 < value <= MAX_IMAGE_SIDE for value in holes)
            and holes[0] <= holes[1]
        ):
            raise ValueError(
                f"hole_size_range must be [min, max], integers from 1 to {MAX_IMAGE_SIDE} "
                "with min <= max"
            )
        context_shift = _number(document.get("context_shift", 0.0), "context_shift")
        if not 0.0 <= context_shift <= 1.0:
            raise ValueError(f"context_shift {context_shift} is outside [0, 1]")
        border_blend = document.get("border_blend", "telea")
        _check_border_blend(border_blend)
        provenance_doc = document.get("provenance", {})
        if not isinstance(provenance_doc, dict):
            raise ValueError("provenance must be an object")
        steps = provenance_doc.get("steps", {})
        if not (
            isinstance(steps, dict)
            and all(isinstance(k, str) and _is_int(v) and v >= 0 for k, v in steps.items())
        ):
            raise ValueError("provenance.steps must map phase names to step counts (>= 0)")
        provenance = Provenance(
            source=str(provenance_doc.get("source", "")),
            data=str(provenance_doc.get("data", "")),
            steps=dict(steps),
            licence=str(provenance_doc.get("licence", "")),
        )
        extra = document.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError("extra must be an object")
        return cls(
            width=width,
            mean=mean_values,  # type: ignore[arg-type]
            train_image_size=size,
            hole_size_range=(holes[0], holes[1]),
            context_shift=context_shift,
            border_blend=border_blend,
            provenance=provenance,
            notes=str(document.get("notes", "")),
            extra=extra,
        )


def _check_border_blend(value: Any) -> None:
    if value not in BORDER_BLENDS:
        raise ValueError(f"border_blend must be one of {', '.join(BORDER_BLENDS)}, got {value!r}")


def _is_int(value: Any) -> bool:
    """A JSON integer (JSON's true and false parse as Python bools, which are ints)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, name: str) -> float:
    try:
        finite = isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        finite = False
    if isinstance(value, bool) or not finite:
        raise ValueError(f"{name} must be a finite number, got {str(value)[:40]}")
    return float(value)


@dataclass
class CompletionModel:
    """A completion network ready for inference (eval mode) together with its metadata."""

    network: CompletionNetwork
    metadata: ModelMetadata
    #: What the pipeline runs the network in (see `glcic.precision`); float32 unless asked.
    precision: Precision = field(default=FLOAT32, compare=False)
    _fused: tuple[tuple[Any, ...], torch.nn.Module] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def inference_network(self) -> torch.nn.Module:
        """The network with BatchNorm folded in, in channels_last; rebuilt whenever any weight,
        buffer, device or mode of `network` has changed since it was last built."""
        if not isinstance(self.network, CompletionNetwork) or self.network.training:
            return self.network
        tensors = [*self.network.parameters(), *self.network.buffers()]
        fingerprint = tuple((t._version, t.data_ptr(), t.device) for t in tensors)
        if self._fused is None or self._fused[0] != fingerprint:
            fused = FusedCompletionNetwork(self.network).to(memory_format=torch.channels_last)
            self._fused = (fingerprint, fused)
        return self._fused[1]

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def mean(self) -> torch.Tensor:
        """The mean colour as a float32 tensor on the model's device."""
        return torch.tensor(self.metadata.mean, dtype=torch.float32, device=self.device)

    def to(self, device: str | torch.device) -> CompletionModel:
        self.network.to(device)
        return self


def new_model(metadata: ModelMetadata | None = None) -> CompletionModel:
    """A randomly initialised model in eval mode (for tests, and as a training starting point)."""
    metadata = metadata or ModelMetadata()
    network = CompletionNetwork(metadata.width)
    network.eval()
    return CompletionModel(network, metadata)


def save_model(
    model: CompletionModel, path: str | os.PathLike[str], storage: str = "float32"
) -> None:
    """Write `model` to `path` atomically.

    `storage="float16"` halves the file for shipping; floating tensors are restored to float32
    when loaded. BatchNorm's batch counter stays int64.
    """
    if storage not in _STORAGE_DTYPES:
        raise ValueError(f"storage must be one of {sorted(_STORAGE_DTYPES)}, got {storage!r}")
    dtype = _STORAGE_DTYPES[storage]
    tensors = {
        name: (tensor.detach().to("cpu", dtype) if tensor.is_floating_point() else tensor)
        .contiguous()
        .clone()
        for name, tensor in model.network.state_dict().items()
    }
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ModelFileError(
                f"tensor {name!r} is not finite in {storage} (too large for float16?); "
                "nothing was written"
            )
    header = {
        "format_version": FORMAT_VERSION,
        "architecture": ARCHITECTURE,
        "storage": storage,
        "metadata": model.metadata.to_json(),
    }
    metadata = {METADATA_KEY: json.dumps(header, sort_keys=True)}
    try:
        atomic_write_with(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be written ({error.strerror or error})") from None


def read_model_metadata(path: str | os.PathLike[str]) -> ModelMetadata:
    """Read only the header: cheap, for listing models without loading weights."""
    file = open_tensor_file(path)
    return _parse_header(file.path, file.metadata)


def load_model(
    path: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    precision: str = "float32",
) -> CompletionModel:
    """Load a model file into a network in eval mode; raises `ModelFileError` on any defect.

    `precision` (auto, float32, bfloat16) is resolved for completion on `device` and kept on
    the model for the pipeline (`glcic.precision.resolve_precision`).

    Everything the header says is checked before a tensor byte is read (`glcic.tensor_file`),
    and the tensors become the network's weights without another copy: the network is built
    on the meta device and takes the loaded tensors as they are. Loading a model of N bytes
    holds about N bytes (twice that for float16 files, which are widened to float32).
    """
    file = open_tensor_file(path)
    path = file.path
    metadata = _parse_header(path, file.metadata)
    with torch.device("meta"):
        network = CompletionNetwork(metadata.width)
    expected = network.state_dict()
    missing = sorted(set(expected) - set(file.tensors))
    unexpected = sorted(set(file.tensors) - set(expected))
    if missing:
        raise ModelFileError(f"{path}: tensor {missing[0]!r} is missing ({len(missing)} in all)")
    if unexpected:
        raise ModelFileError(
            f"{path}: unexpected tensor {unexpected[0]!r} for a width-{metadata.width} network"
        )
    for name, reference in expected.items():
        entry = file.tensors[name]
        if entry.shape != tuple(reference.shape):
            raise ModelFileError(
                f"{path}: tensor {name!r} has shape {entry.shape}, expected "
                f"{tuple(reference.shape)} for a width-{metadata.width} network"
            )
        allowed = (
            {torch.float32, torch.float16} if reference.is_floating_point() else {reference.dtype}
        )
        if entry.torch_dtype not in allowed:
            raise ModelFileError(
                f"{path}: tensor {name!r} is stored as {entry.torch_dtype or entry.dtype}, "
                f"expected {reference.dtype}"
            )
    state = file.read_many(list(expected))
    for name, reference in expected.items():
        tensor = state[name]
        if reference.is_floating_point():
            tensor = state[name] = tensor.to(torch.float32)
            if not torch.isfinite(tensor).all():
                raise ModelFileError(f"{path}: tensor {name!r} holds NaN or infinite values")
            if name.endswith("running_var") and (tensor < 0).any():
                raise ModelFileError(f"{path}: tensor {name!r} holds negative variances")
    network.load_state_dict(state, assign=True)
    network.eval()
    network.to(device)
    chosen = resolve_precision(precision, torch.device(device), "completion")
    return CompletionModel(network, metadata, chosen)


def _parse_header(path: Path, header: Any) -> ModelMetadata:
    """Validate the safetensors `__metadata__` (any JSON value, as found) and our document."""
    if header is not None and not isinstance(header, dict):
        raise ModelFileError(
            f"{path}: the safetensors metadata is a {_json_type(header)}, not an object of strings"
        )
    if not header or METADATA_KEY not in header:
        raise ModelFileError(
            f"{path}: a safetensors file, but not a glcic model (no '{METADATA_KEY}' metadata)"
        )
    if not isinstance(header[METADATA_KEY], str):
        raise ModelFileError(
            f"{path}: the '{METADATA_KEY}' metadata is a {_json_type(header[METADATA_KEY])}, "
            "not a string holding a JSON document"
        )
    try:
        document = json.loads(header[METADATA_KEY])
    except RecursionError:
        raise ModelFileError(f"{path}: the glcic metadata is nested too deeply") from None
    except json.JSONDecodeError as error:
        raise ModelFileError(f"{path}: the glcic metadata is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise ModelFileError(f"{path}: the glcic metadata is not a JSON object")
    version = document.get("format_version")
    if version is None:
        raise ModelFileError(f"{path}: the glcic metadata has no format version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ModelFileError(
            f"{path}: the format version is a {_json_type(version)}, not an integer"
        )
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {version} is newer than this glcic understands "
            f"({FORMAT_VERSION}); upgrade glcic"
        )
    if version < 1:
        raise ModelFileError(f"{path}: invalid model format version {version}")
    if document.get("architecture") != ARCHITECTURE:
        raise ModelFileError(
            f"{path}: unknown architecture {document.get('architecture')!r}, "
            f"expected {ARCHITECTURE!r}"
        )
    if document.get("storage", "float32") not in _STORAGE_DTYPES:
        raise ModelFileError(f"{path}: unknown storage type {document.get('storage')!r}")
    try:
        return ModelMetadata.from_json(document.get("metadata"))
    except ValueError as error:
        raise ModelFileError(f"{path}: bad metadata: {error}") from None


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages about a wrong one."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}.get(type(value), type(value).__name__)
