"""Test support: write binary Torch7 files, and evaluate such a model in float64 NumPy.

The writer produces files with the same object layout as the authors' released models (a table
holding `model`, an `nn.Sequential` of Torch7 modules, and `mean`), so the importer can be tested
without the real weights, which we must not ship. The reference forward pass reads every
hyper-parameter from the Torch7 module fields and shares no code with torch, so errors in our
layer order, padding, dilation or deconvolution geometry show up as a mismatch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glcic.networks import COMPLETION_LAYERS, scaled_channels

NIL, NUMBER, STRING, TABLE, TORCH, BOOLEAN = 0, 1, 2, 3, 4, 5


@dataclass
class T7Object:
    """An instance of a Torch7 class: its class name and its field table."""

    typename: str
    fields: dict[str, Any] = field(default_factory=dict)


class Writer:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.next_index = 1

    def int32(self, value: int) -> None:
        self.chunks.append(struct.pack("<i", value))

    def int64(self, value: int) -> None:
        self.chunks.append(struct.pack("<q", value))

    def string(self, text: str) -> None:
        data = text.encode()
        self.int32(len(data))
        self.chunks.append(data)

    def index(self) -> None:
        self.int32(self.next_index)
        self.next_index += 1

    def obj(self, value: Any) -> None:
        if value is None:
            self.int32(NIL)
        elif isinstance(value, bool):
            self.int32(BOOLEAN)
            self.int32(int(value))
        elif isinstance(value, (int, float)):
            self.int32(NUMBER)
            self.chunks.append(struct.pack("<d", float(value)))
        elif isinstance(value, str):
            self.int32(STRING)
            self.string(value)
        elif isinstance(value, np.ndarray):
            self.tensor(value)
        elif isinstance(value, T7Object):
            self.int32(TORCH)
            self.index()
            self.string("V 1")
            self.string(value.typename)
            self.obj(value.fields)
        elif isinstance(value, (dict, list)):
            items = (
                list(value.items())
                if isinstance(value, dict)
                else [(i + 1, v) for i, v in enumerate(value)]
            )
            self.int32(TABLE)
            self.index()
            self.int32(len(items))
            for key, item in items:
                self.obj(key)
                self.obj(item)
        else:
            raise TypeError(type(value))

    def tensor(self, array: np.ndarray) -> None:
        kind = {np.float32: "Float", np.float64: "Double", np.int64: "Long"}[array.dtype.type]
        array = np.ascontiguousarray(array)
        self.int32(TORCH)
        self.index()
        self.string("V 1")
        self.string(f"torch.{kind}Tensor")
        self.int32(array.ndim)
        for size in array.shape:
            self.int64(size)
        for stride in array.strides:
            self.int64(stride // array.itemsize)
        self.int64(1)
        self.int32(TORCH)
        self.index()
        self.string("V 1")
        self.string(f"torch.{kind}Storage")
        self.int64(array.size)
        self.chunks.append(array.tobytes())


def t7_bytes(value: Any) -> bytes:
    writer = Writer()
    writer.obj(value)
    return b"".join(writer.chunks)


def write_t7(path: Path, value: Any) -> Path:
    path.write_bytes(t7_bytes(value))
    return path


def official_like_modules(
    rng: np.random.Generator,
    width: float = 0.25,
    bn_eps: float = 1e-5,
    legacy_std: bool = False,
) -> list[T7Object]:
    """The module list of the authors' completion network (at `width`), random weights."""
    modules: list[T7Object] = []
    in_ch = 4
    last = len(COMPLETION_LAYERS) - 1
    for index, spec in enumerate(COMPLETION_LAYERS):
        out_ch = spec.out_channels if index == last else scaled_channels(spec.out_channels, width)
        k = spec.kernel
        scale = 1.0 / np.sqrt(in_ch * k * k)
        if spec.kind == "deconv":
            modules.append(
                T7Object(
                    "nn.SpatialFullConvolution",
                    {
                        "nInputPlane": in_ch,
                        "nOutputPlane": out_ch,
                        "kW": k,
                        "kH": k,
                        "dW": 2,
                        "dH": 2,
                        "padW": 1,
                        "padH": 1,
                        "adjW": 0,
                        "adjH": 0,
                        "weight": (rng.standard_normal((in_ch, out_ch, k, k)) * scale * 2).astype(
                            np.float32
                        ),
                        "bias": (rng.standard_normal(out_ch) * 0.1).astype(np.float32),
                        "train": False,
                    },
                )
            )
        else:
            fields = {
                "nInputPlane": in_ch,
                "nOutputPlane": out_ch,
                "kW": k,
                "kH": k,
                "dW": spec.stride,
                "dH": spec.stride,
                "padW": spec.dilation * (k - 1) // 2,
                "padH": spec.dilation * (k - 1) // 2,
                "weight": (rng.standard_normal((out_ch, in_ch, k, k)) * scale).astype(np.float32),
                "bias": (rng.standard_normal(out_ch) * 0.1).astype(np.float32),
                "train": False,
            }
            typename = "nn.SpatialConvolution"
            if spec.dilation > 1:
                typename = "nn.SpatialDilatedConvolution"
                fields["dilationW"] = spec.dilation
                fields["dilationH"] = spec.dilation
            modules.append(T7Object(typename, fields))
        if index == last:
            modules.append(T7Object("nn.Sigmoid", {"train": False}))
        else:
            variance = rng.uniform(0.5, 2.0, out_ch)
            bn = {
                "eps": bn_eps,
                "momentum": 0.1,
                "affine": True,
                "train": False,
                "weight": rng.uniform(0.5, 1.5, out_ch).astype(np.float32),
                "bias": (rng.standard_normal(out_ch) * 0.1).astype(np.float32),
                "running_mean": (rng.standard_normal(out_ch) * 0.1).astype(np.float32),
            }
            if legacy_std:
                bn["running_std"] = (1.0 / np.sqrt(variance + bn_eps)).astype(np.float32)
            else:
                bn["running_var"] = variance.astype(np.float32)
            modules.append(T7Object("nn.SpatialBatchNormalization", bn))
            modules.append(T7Object("nn.ReLU", {"inplace": True, "train": False}))
        in_ch = out_ch
    return modules


def completion_file(modules: list[T7Object], mean: Any = None) -> dict[str, Any]:
    if mean is None:
        mean = np.array([0.4560, 0.4472, 0.4155], dtype=np.float32)
    return {"model": T7Object("nn.Sequential", {"modules": modules, "train": False}), "mean": mean}


def _conv(x: np.ndarray, f: dict[str, Any]) -> np.ndarray:
    w = f["weight"].astype(np.float64)
    stride, pad, dil = f["dW"], f["padW"], f.get("dilationW", 1)
    _, height, width = x.shape
    k = f["kW"]
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out_h = (height + 2 * pad - dil * (k - 1) - 1) // stride + 1
    out_w = (width + 2 * pad - dil * (k - 1) - 1) // stride + 1
    out = np.zeros((w.shape[0], out_h, out_w))
    for ky in range(k):
        for kx in range(k):
            patch = xp[
                :,
                ky * dil : ky * dil + stride * (out_h - 1) + 1 : stride,
                kx * dil : kx * dil + stride * (out_w - 1) + 1 : stride,
            ]
            out += np.einsum("oi,ihw->ohw", w[:, :, ky, kx], patch)
    return out + f["bias"].astype(np.float64)[:, None, None]


def _deconv(x: np.ndarray, f: dict[str, Any]) -> np.ndarray:
    """Transposed convolution by its definition: every input pixel scatters a weighted kernel."""
    w = f["weight"].astype(np.float64)
    stride, pad, k = f["dW"], f["padW"], f["kW"]
    _, height, width = x.shape
    full = np.zeros((w.shape[1], (height - 1) * stride + k, (width - 1) * stride + k))
    for ky in range(k):
        for kx in range(k):
            full[
                :,
                ky : ky + stride * (height - 1) + 1 : stride,
                kx : kx + stride * (width - 1) + 1 : stride,
            ] += np.einsum("io,ihw->ohw", w[:, :, ky, kx], x)
    out_h = (height - 1) * stride - 2 * pad + k + f["adjH"]
    out_w = (width - 1) * stride - 2 * pad + k + f["adjW"]
    return (
        full[:, pad : pad + out_h, pad : pad + out_w] + f["bias"].astype(np.float64)[:, None, None]
    )


def reference_forward(modules: list[T7Object], x: np.ndarray) -> np.ndarray:
    """Evaluate the Torch7 module list on one (4, H, W) input in float64."""
    x = x.astype(np.float64)
    for module in modules:
        f = module.fields
        if module.typename in ("nn.SpatialConvolution", "nn.SpatialDilatedConvolution"):
            x = _conv(x, f)
        elif module.typename == "nn.SpatialFullConvolution":
            x = _deconv(x, f)
        elif module.typename == "nn.SpatialBatchNormalization":
            mean = f["running_mean"].astype(np.float64)[:, None, None]
            if "running_std" in f:
                inv_std = f["running_std"].astype(np.float64)[:, None, None]
            else:
                inv_std = (
                    1.0 / np.sqrt(f["running_var"].astype(np.float64) + f["eps"])[:, None, None]
                )
            x = (x - mean) * inv_std * f["weight"].astype(np.float64)[:, None, None] + f[
                "bias"
            ].astype(np.float64)[:, None, None]
        elif module.typename == "nn.ReLU":
            x = np.maximum(x, 0.0)
        elif module.typename == "nn.Sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
        else:
            raise ValueError(module.typename)
    return x
