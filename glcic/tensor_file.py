"""Strict reading of safetensors files, tensor by tensor, without mapping the file.

safetensors' own readers either memory-map the file (`safe_open`, `load_file`) or take the
whole file as one `bytes` object (`load`). A mapped file that is overwritten in place while it
loads (a plain `cp` over it in the daemon's model folder) kills the process with SIGBUS, and
the `bytes` route holds the file twice (the bytes plus the tensors made from them). So the
header is parsed and its layout checked against the file's size before any tensor byte is
read, and each tensor is then read straight from the file into its own storage: a model of
N bytes costs about N bytes to load, and a file that changes underneath gives a clear error.

The layout rules are safetensors' own: known dtypes, offsets that match each shape exactly,
tensors packed back to back from offset 0, and nothing after the last one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glcic.errors import ModelFileError

#: A glcic header is a few kilobytes; anything larger than this is refused before it is read.
MAX_HEADER_BYTES = 16 * 1024 * 1024

#: safetensors dtype names we can read, with torch's dtype (every name safetensors defines
#: is recognised for its size so a foreign file gets "stored as BF16", not "corrupt").
_TORCH_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
_ITEM_SIZES = {
    **{name: dtype.itemsize for name, dtype in _TORCH_DTYPES.items()},
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor lies in the file, already checked against the file's layout."""

    name: str
    dtype: str  # the safetensors name, e.g. "F32"
    shape: tuple[int, ...]
    begin: int  # offset from the start of the data section
    end: int

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return _TORCH_DTYPES.get(self.dtype)


@dataclass(frozen=True)
class TensorFile:
    """A safetensors file whose header and layout have been validated."""

    path: Path
    metadata: Any  # the header's "__metadata__" as found (validated by the caller)
    tensors: dict[str, TensorEntry]
    data_start: int  # file offset of the data section
    #: (device, inode, size, mtime) when the header was read: the data must come from that file.
    identity: tuple[int, int, int, int]

    def read(self, name: str) -> torch.Tensor:
        """Read one tensor from the file into fresh memory (see the module docstring)."""
        return self.read_many([name])[name]

    def read_many(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Read the named tensors, opening the file once."""
        result: dict[str, torch.Tensor] = {}
        try:
            with open(self.path, "rb") as handle:
                if _identity(os.fstat(handle.fileno())) != self.identity:
                    raise ModelFileError(
                        f"{self.path}: the file changed while it was read (replaced or "
                        "rewritten); try again"
                    )
                for name in names:
                    result[name] = self._read_one(handle, self.tensors[name])
        except OSError as error:
            raise ModelFileError(
                f"{self.path}: cannot be read: {error.strerror or error}"
            ) from None
        return result

    def _read_one(self, handle: Any, entry: TensorEntry) -> torch.Tensor:
        dtype = entry.torch_dtype
        if dtype is None:
            raise ModelFileError(f"{self.path}: tensor {entry.name!r} has unreadable dtype")
        tensor = torch.empty(entry.shape, dtype=dtype)
        size = entry.end - entry.begin
        if size == 0:
            return tensor
        handle.seek(self.data_start + entry.begin)
        view = memoryview(tensor.reshape(-1).view(torch.uint8).numpy()).cast("B")
        if handle.readinto(view) != size:
            raise ModelFileError(f"{self.path}: the file changed or shrank while it was read")
        return tensor


def open_tensor_file(path: str | os.PathLike[str]) -> TensorFile:
    """Parse and validate the header and layout of `path`; reads no tensor data."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if not path.is_file():
        raise ModelFileError(f"{path}: not a file")
    try:
        with open(path, "rb") as handle:
            opened = os.fstat(handle.fileno())
            file_size = opened.st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ModelFileError(f"{path}: file is empty or truncated ({len(prefix)} bytes)")
            length = int.from_bytes(prefix, "little")
            first = handle.read(1)
            if length == 0 or first != b"{":
                raise ModelFileError(
                    f"{path}: not a glcic model file (not in safetensors format; a PyTorch "
                    ".pt/.pth or Torch7 .t7 file must be converted first, e.g. with "
                    "'glcic import-t7')"
                )
            if length > MAX_HEADER_BYTES:
                raise ModelFileError(
                    f"{path}: its safetensors header claims {_megabytes(length)}, more than "
                    f"the {_megabytes(MAX_HEADER_BYTES)} a model header can be"
                )
            if 8 + length > file_size:
                raise ModelFileError(f"{path}: the file is truncated (it ends inside its header)")
            text = first + handle.read(length - 1)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read: {error.strerror or error}") from None
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise ModelFileError(f"{path}: not a readable safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: not a readable safetensors file (bad header)")
    metadata = header.pop("__metadata__", None)
    entries = {name: _entry(path, name, value) for name, value in header.items()}
    _check_layout(path, entries, data_size=file_size - 8 - length)
    return TensorFile(path, metadata, entries, data_start=8 + length, identity=_identity(opened))


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _entry(path: Path, name: str, value: Any) -> TensorEntry:
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: tensor {name!r} has no dtype, shape and offsets")
    dtype = value.get("dtype")
    shape = value.get("shape")
    offsets = value.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _ITEM_SIZES:
        raise ModelFileError(f"{path}: tensor {name!r} has unknown dtype {str(dtype)[:20]!r}")
    if not (isinstance(shape, list) and all(_is_count(side) for side in shape)):
        raise ModelFileError(f"{path}: tensor {name!r} has an invalid shape")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_count, offsets))):
        raise ModelFileError(f"{path}: tensor {name!r} has invalid data offsets")
    begin, end = offsets
    needed = math.prod(shape) * _ITEM_SIZES[dtype]
    if end - begin != needed:
        raise ModelFileError(
            f"{path}: tensor {name!r} of shape {shape} needs {needed} bytes, "
            f"its offsets give {end - begin}"
        )
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def _check_layout(path: Path, entries: dict[str, TensorEntry], data_size: int) -> None:
    """Tensors must tile the data section exactly: no gap, no overlap, nothing after."""
    position = 0
    previous = None
    for entry in sorted(entries.values(), key=lambda e: (e.begin, e.end)):
        if entry.begin < position:
            raise ModelFileError(f"{path}: tensors {previous!r} and {entry.name!r} overlap")
        if entry.begin > position:
            raise ModelFileError(f"{path}: unused bytes before tensor {entry.name!r}")
        position, previous = entry.end, entry.name
    if data_size < position:
        raise ModelFileError(
            f"{path}: the file is truncated (its header promises {position} bytes of "
            f"tensors, it holds {data_size})"
        )
    if data_size > position:
        raise ModelFileError(
            f"{path}: {data_size - position} bytes of unexpected data after the last tensor"
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size} bytes"
