"""Import of the authors' released Torch7 completion models into glcic model files.

The file format is parsed by `torchfile` (tables, Torch classes, object references). We register
our own readers for tensors and storages through its `register_handler` hook, because the stock
ones read the platform's C ``long`` (4 bytes on Windows, where the files hold 8) and build arrays
with `as_strided` over storages whose length is never checked, so a truncated or crafted file
could make them read outside their buffer. Ours read fixed 8-byte little-endian integers, refuse
any size the file cannot hold, and bounds-check every view before copying it.

Conversion walks the file's `nn.Sequential` module by module against the paper's layer table and
stops at the first module that differs, naming it. Nothing in a Torch7 file is ever executed.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchfile

from glcic.errors import Torch7ImportError
from glcic.model_file import CompletionModel, ModelMetadata, Provenance
from glcic.networks import COMPLETION_LAYERS, CompletionNetwork, scaled_channels

#: Terms of the authors' released weights; copied into the metadata of every imported model.
OFFICIAL_LICENCE = (
    "CC BY-NC-SA 4.0 (weights by Iizuka, Simo-Serra and Ishikawa, 2017): non-commercial use "
    "only, attribution required, derivatives under the same licence"
)

_MAX_DIMS = 8
#: No tensor of a completion model comes near this; a larger claim is a damaged or hostile file.
_MAX_TENSOR_ELEMENTS = 64 * 1024 * 1024
_TENSOR_DTYPES = {
    b"Float": np.float32,
    b"Double": np.float64,
    b"Long": np.int64,
    b"Int": np.int32,
    b"Short": np.int16,
    b"Char": np.int8,
    b"Byte": np.uint8,
}


def _remaining_bytes(reader: Any) -> int:
    handle = reader.f
    return os.fstat(handle.fileno()).st_size - handle.tell()


def _read_int64(reader: Any, count: int) -> list[int]:
    data = reader.f.read(8 * count)
    if len(data) != 8 * count:
        raise Torch7ImportError("the file ends in the middle of a tensor header (truncated)")
    return list(struct.unpack(f"<{count}q", data))


def _storage_reader(dtype: type[np.generic]) -> Any:
    def read_storage(reader: Any, version: Any) -> np.ndarray:
        (size,) = _read_int64(reader, 1)
        itemsize = np.dtype(dtype).itemsize
        if size < 0 or size * itemsize > _remaining_bytes(reader):
            raise Torch7ImportError(
                f"a storage claims {size} elements but the file holds fewer (truncated or damaged)"
            )
        return np.frombuffer(reader.f.read(size * itemsize), dtype=dtype)

    return read_storage


def _tensor_reader(dtype: type[np.generic]) -> Any:
    def read_tensor(reader: Any, version: Any) -> np.ndarray:
        ndim = reader.read_int()
        if not 0 <= ndim <= _MAX_DIMS:
            raise Torch7ImportError(f"a tensor claims {ndim} dimensions (damaged file)")
        sizes = _read_int64(reader, ndim)
        strides = _read_int64(reader, ndim)
        (offset,) = _read_int64(reader, 1)
        offset -= 1  # Torch7 offsets count from 1
        storage = reader.read_obj()
        if ndim == 0 or any(size == 0 for size in sizes):
            return np.zeros([max(size, 0) for size in sizes] or [0], dtype=dtype)
        if not isinstance(storage, np.ndarray) or storage.dtype != np.dtype(dtype):
            raise Torch7ImportError("a tensor has no storage of its own type (damaged file)")
        if min(sizes) < 0 or min(strides) < 0 or offset < 0:
            raise Torch7ImportError("a tensor has negative sizes, strides or offset (damaged file)")
        # Zero or overlapping strides could make a few stored values stand for billions.
        elements = math.prod(sizes)
        if elements > min(storage.size, _MAX_TENSOR_ELEMENTS) or any(
            stride == 0 and size > 1 for size, stride in zip(sizes, strides, strict=True)
        ):
            raise Torch7ImportError(
                f"a tensor claims {elements} elements over a storage of {storage.size} "
                "(damaged file)"
            )
        last = offset + sum(
            (size - 1) * stride for size, stride in zip(sizes, strides, strict=True)
        )
        if last >= storage.size:
            raise Torch7ImportError(
                "a tensor reaches past the end of its storage (truncated or damaged file)"
            )
        view = np.lib.stride_tricks.as_strided(
            storage[offset:],
            shape=sizes,
            strides=[stride * storage.itemsize for stride in strides],
            writeable=False,
        )
        return np.array(view, copy=True)

    return read_tensor


def _register_strict_readers() -> None:
    for name, dtype in _TENSOR_DTYPES.items():
        # Torch7 calls the CUDA float type plain "Cuda": torch.CudaTensor, torch.CudaStorage.
        cuda_name = b"torch.Cuda" + (b"" if name == b"Float" else name)
        for class_prefix in (b"torch." + name, cuda_name):
            torchfile.register_handler(class_prefix + b"Tensor")(_tensor_reader(dtype))
            torchfile.register_handler(class_prefix + b"Storage")(_storage_reader(dtype))


_register_strict_readers()


def read_torch7(path: str | os.PathLike[str]) -> Any:
    """Parse a binary Torch7 file into Python objects; any defect becomes `Torch7ImportError`."""
    path = Path(path)
    if not path.is_file():
        raise Torch7ImportError(f"{path}: no such file")
    try:
        return torchfile.load(str(path), utf8_decode_strings=True)
    except Torch7ImportError as error:
        raise Torch7ImportError(f"{path}: {error}") from None
    except (struct.error, EOFError):
        raise Torch7ImportError(
            f"{path}: the file ends unexpectedly: it is truncated, or not a binary Torch7 file"
        ) from None
    except RecursionError:
        raise Torch7ImportError(f"{path}: objects nested too deeply (damaged file)") from None
    except (
        torchfile.T7ReaderException,
        ValueError,
        UnicodeDecodeError,
        TypeError,
        KeyError,
        NotImplementedError,
        MemoryError,
        OverflowError,
    ) as error:
        raise Torch7ImportError(
            f"{path}: not a readable binary Torch7 file ({type(error).__name__}: {error})"
        ) from None


def _typename(obj: Any) -> str:
    if isinstance(obj, torchfile.TorchObject):
        name = obj.torch_typename()
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    return type(obj).__name__


def _flatten_sequential(module: Any, open_containers: tuple[int, ...] = ()) -> Iterator[Any]:
    """Nested `nn.Sequential` containers compute the same as their flattened module list."""
    if _typename(module) == "nn.Sequential":
        if id(module) in open_containers:
            raise Torch7ImportError("an nn.Sequential contains itself (damaged file)")
        modules = _field(module, "modules")
        if not isinstance(modules, list):
            raise Torch7ImportError("an nn.Sequential has no module list (damaged file)")
        for child in modules:
            yield from _flatten_sequential(child, (*open_containers, id(module)))
    else:
        yield module


def _field(module: Any, name: str) -> Any:
    """A field of a Torch7 object, or None (also when the object's field table is damaged)."""
    if not isinstance(module, torchfile.TorchObject):
        return None
    table = getattr(module, "_obj", None)
    return table.get(name) if isinstance(table, dict) else None


def _array(module: Any, name: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    value = _field(module, name)
    if not isinstance(value, np.ndarray):
        raise Torch7ImportError(f"{where}: has no '{name}' tensor")
    if value.shape != shape:
        if value.ndim == 2 and value.shape == (shape[0], math.prod(shape[1:])):
            value = value.reshape(shape)  # old Torch7 kept conv weights as 2-D matrices
        else:
            raise Torch7ImportError(f"{where}: '{name}' has shape {value.shape}, expected {shape}")
    if not np.issubdtype(value.dtype, np.floating):
        raise Torch7ImportError(f"{where}: '{name}' is {value.dtype}, expected floating point")
    if not np.isfinite(value).all():
        raise Torch7ImportError(f"{where}: '{name}' holds NaN or infinite values")
    return value.astype(np.float32)


def _expect_number(module: Any, name: str, expected: int, where: str, default: int | None = None):
    value = _field(module, name)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != expected:
        raise Torch7ImportError(f"{where}: {name} is {value}, expected {expected}")


def _describe(index: int, module: Any) -> str:
    return f"module {index + 1} ({_typename(module)})"


def _convert_conv(module: Any, where: str, conv: torch.nn.Module, dilation: int) -> dict:
    out_ch, in_ch, kh, kw = conv.weight.shape
    wanted_type = "nn.SpatialDilatedConvolution" if dilation > 1 else "nn.SpatialConvolution"
    accepted = {wanted_type, "nn.SpatialDilatedConvolution"}
    if _typename(module) not in accepted:
        raise Torch7ImportError(f"{where}: expected {wanted_type}")
    pad = conv.padding[0]
    for name, expected in (
        ("nInputPlane", in_ch),
        ("nOutputPlane", out_ch),
        ("kW", kw),
        ("kH", kh),
        ("dW", conv.stride[1]),
        ("dH", conv.stride[0]),
        ("padW", pad),
        ("padH", pad),
    ):
        _expect_number(module, name, expected, where)
    _expect_number(module, "dilationW", dilation, where, default=1)
    _expect_number(module, "dilationH", dilation, where, default=1)
    return {
        "weight": _array(module, "weight", (out_ch, in_ch, kh, kw), where),
        "bias": _array(module, "bias", (out_ch,), where),
    }


def _convert_deconv(module: Any, where: str, deconv: torch.nn.Module) -> dict:
    in_ch, out_ch, kh, kw = deconv.weight.shape
    if _typename(module) != "nn.SpatialFullConvolution":
        raise Torch7ImportError(f"{where}: expected nn.SpatialFullConvolution")
    for name, expected in (
        ("nInputPlane", in_ch),
        ("nOutputPlane", out_ch),
        ("kW", kw),
        ("kH", kh),
        ("dW", deconv.stride[1]),
        ("dH", deconv.stride[0]),
        ("padW", deconv.padding[1]),
        ("padH", deconv.padding[0]),
    ):
        _expect_number(module, name, expected, where)
    _expect_number(module, "adjW", 0, where, default=0)
    _expect_number(module, "adjH", 0, where, default=0)
    return {
        "weight": _array(module, "weight", (in_ch, out_ch, kh, kw), where),
        "bias": _array(module, "bias", (out_ch,), where),
    }


def _convert_batchnorm(module: Any, where: str, norm: torch.nn.BatchNorm2d) -> dict:
    if _typename(module) != "nn.SpatialBatchNormalization":
        raise Torch7ImportError(f"{where}: expected nn.SpatialBatchNormalization")
    channels = norm.num_features
    eps = _field(module, "eps")
    if eps is None:
        eps = 1e-5
    if not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise Torch7ImportError(f"{where}: eps {eps!r} is not a small positive number")
    mean = _array(module, "running_mean", (channels,), where)
    if isinstance(_field(module, "running_var"), np.ndarray):
        total_var = _array(module, "running_var", (channels,), where).astype(np.float64) + eps
    elif isinstance(_field(module, "running_std"), np.ndarray):
        # Torch7 before 2016 kept the inverse standard deviation 1 / sqrt(var + eps).
        inverse_std = _array(module, "running_std", (channels,), where).astype(np.float64)
        if (inverse_std <= 0).any():
            raise Torch7ImportError(f"{where}: running_std has non-positive values")
        total_var = 1.0 / inverse_std**2
    else:
        raise Torch7ImportError(f"{where}: has neither running_var nor running_std")
    # Our BatchNorm uses its own eps; store the variance that gives the same denominator.
    variance = total_var - norm.eps
    if (variance < 0).any():
        raise Torch7ImportError(f"{where}: running variance is negative")
    has_affine = isinstance(_field(module, "weight"), np.ndarray)
    weight = (
        _array(module, "weight", (channels,), where)
        if has_affine
        else np.ones(channels, np.float32)
    )
    bias = (
        _array(module, "bias", (channels,), where) if has_affine else np.zeros(channels, np.float32)
    )
    return {
        "weight": weight,
        "bias": bias,
        "running_mean": mean,
        "running_var": variance.astype(np.float32),
    }


def _read_mean(data: dict) -> tuple[float, float, float]:
    mean = data.get("mean")
    values = mean.reshape(-1).tolist() if isinstance(mean, np.ndarray) else mean
    if not (
        isinstance(values, list)
        and len(values) == 3
        and all(isinstance(v, (int, float)) and 0.0 <= v <= 1.0 for v in values)
    ):
        raise Torch7ImportError("the file's 'mean' is not three colour values in [0, 1]")
    return (float(values[0]), float(values[1]), float(values[2]))


def convert_torch7(data: Any, source_name: str) -> CompletionModel:
    """Map a parsed Torch7 completion model onto our network, checking every module."""
    if not isinstance(data, dict) or "model" not in data:
        raise Torch7ImportError(
            "not a completion model file: expected a table with 'model' and 'mean'"
        )
    mean = _read_mean(data)
    modules = list(_flatten_sequential(data["model"]))
    if not modules:
        raise Torch7ImportError("the model holds no modules")
    first = modules[0]
    first_out = _field(first, "nOutputPlane")
    if isinstance(first_out, bool) or not isinstance(first_out, int) or first_out <= 0:
        raise Torch7ImportError(f"{_describe(0, first)}: expected a convolution with 64 outputs")
    width = first_out / COMPLETION_LAYERS[0].out_channels
    if scaled_channels(COMPLETION_LAYERS[0].out_channels, width) != first_out or width > 4:
        raise Torch7ImportError(f"{_describe(0, first)}: unexpected output channels {first_out}")
    network = CompletionNetwork(width)
    targets = list(network.layers)
    state: dict[str, torch.Tensor] = {}
    for index, target in enumerate(targets):
        if index >= len(modules):
            raise Torch7ImportError(
                f"the model ends after {len(modules)} modules; expected {len(targets)} "
                f"(next would be {type(target).__name__})"
            )
        module = modules[index]
        where = _describe(index, module)
        if isinstance(target, torch.nn.Conv2d):
            arrays = _convert_conv(module, where, target, target.dilation[0])
        elif isinstance(target, torch.nn.ConvTranspose2d):
            arrays = _convert_deconv(module, where, target)
        elif isinstance(target, torch.nn.BatchNorm2d):
            arrays = _convert_batchnorm(module, where, target)
        elif isinstance(target, torch.nn.ReLU):
            if _typename(module) != "nn.ReLU":
                raise Torch7ImportError(f"{where}: expected nn.ReLU")
            arrays = {}
        elif isinstance(target, torch.nn.Sigmoid):
            if _typename(module) != "nn.Sigmoid":
                raise Torch7ImportError(f"{where}: expected nn.Sigmoid")
            arrays = {}
        else:  # pragma: no cover - the network holds only the types above
            raise AssertionError(type(target))
        for name, array in arrays.items():
            state[f"layers.{index}.{name}"] = torch.from_numpy(np.ascontiguousarray(array))
    if len(modules) > len(targets):
        extra = modules[len(targets)]
        raise Torch7ImportError(
            f"{_describe(len(targets), extra)}: unexpected module after the final sigmoid"
        )
    missing, unexpected = network.load_state_dict(state, strict=False)
    assert not unexpected and all(name.endswith("num_batches_tracked") for name in missing)
    network.eval()
    lower = source_name.lower()
    dataset = "CelebA" if "celeba" in lower else "Places2" if "places" in lower else "unknown"
    notes = "Imported from the authors' Torch7 release."
    if "freeform" in lower:
        notes += " Trained with free-form (brush stroke) holes."
    metadata = ModelMetadata(
        width=width,
        mean=mean,
        train_image_size=256,
        hole_size_range=(96, 128),
        provenance=Provenance(
            source=f"import-t7 {source_name}", data=dataset, licence=OFFICIAL_LICENCE
        ),
        notes=notes,
    )
    return CompletionModel(network, metadata)


def import_torch7(path: str | os.PathLike[str]) -> CompletionModel:
    """Read a Torch7 completion model file and convert it; raises `Torch7ImportError`."""
    path = Path(path)
    data = read_torch7(path)
    try:
        return convert_torch7(data, path.name)
    except Torch7ImportError as error:
        raise Torch7ImportError(f"{path}: {error}") from None
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as error:
        # A structure torchfile parsed but that is not a sane Torch7 model.
        raise Torch7ImportError(
            f"{path}: damaged model structure ({type(error).__name__}: {error})"
        ) from None
