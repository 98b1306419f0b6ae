"""Which floating-point precision the networks run in: float32, or bfloat16 autocast.

bfloat16 pays only on hardware built for it. On a CUDA GPU it is the fast path. On a CPU it
depends on the processor: Intel Xeons with AMX run this network 3.5-4x faster under bf16
autocast, while on CPUs with AVX2 only (no bf16 instructions) it is emulated and about 30x
slower. So `auto` never guesses from the device type alone: on a CPU it looks for bf16
instructions and, where they exist, times both precisions once per process on a small
convolution stack shaped like the network, and keeps bf16 only if it is clearly faster.

Completion (the product's fill) may use bf16 under `auto` only while it has been shown on the
development set to move no hole-ratio bin's PSNR by more than 0.02 dB (`COMPLETION_BF16_VALIDATED`,
measured for the shipped default; a new default model must pass the same check before it ships).
"""

from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from glcic.errors import InputError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the command-line tools name PRECISIONS in their
# parsers, and `--help` should not wait for torch to load.

PRECISIONS = ("auto", "float32", "bfloat16")

#: bf16 must beat float32 by this factor in the CPU probe to be chosen.
_PROBE_MIN_SPEEDUP = 1.3

#: Whether bf16 completion has passed the dev-set check (no bin's PSNR moved by > 0.02 dB).
#: Passed 2026-12-04 on a Zen 4 EPYC (AVX-512 BF16): `glcic-eval` on all 600 dev pairs with
#: `--precision float32` and `bfloat16` moved no bin's PSNR by more than 0.001 dB (one pair at
#: most 0.03 dB) and no bin's L1 by more than 0.00003 (benchmarks/results/bf16-dev-2026-12-04).
#: Set it back to False if a new default model fails that check.
COMPLETION_BF16_VALIDATED = True


@dataclass(frozen=True)
class Precision:
    """A resolved precision: what runs, and why (for logs and `glcic-daemon status`)."""

    name: str  # "float32" or "bfloat16"
    reason: str

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context for `device` (a no-op for float32)."""
        if self.name != "bfloat16":
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device.type, dtype=torch.bfloat16)

    def describe(self) -> str:
        return f"{self.name} ({self.reason})"


#: What runs when nobody asked: the library's default, exact and the same on every machine.
FLOAT32 = Precision("float32", "the default")


def check_precision(name: str) -> str:
    """`name` if it is one of `PRECISIONS`, else an `InputError` naming the choices."""
    if name not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return name


def resolve_precision(requested: str, device: torch.device | str, purpose: str) -> Precision:
    """Turn `requested` (auto, float32, bfloat16) into what runs on `device` for `purpose`
    ("training" or "completion")."""
    import torch

    check_precision(requested)
    if purpose not in ("training", "completion"):
        raise ValueError(f"purpose must be training or completion, got {purpose!r}")
    device = torch.device(device)
    if requested == "float32":
        return Precision("float32", "asked for")
    if requested == "bfloat16":
        if device.type not in ("cpu", "cuda"):
            raise InputError(f"--precision bfloat16 runs on cpu and cuda, not on {device.type}")
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise InputError(f"--precision bfloat16: {device} does not support bfloat16")
        return Precision("bfloat16", "asked for")
    if purpose == "completion" and not COMPLETION_BF16_VALIDATED:
        return Precision("float32", "bf16 completion not yet validated on the dev set")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bfloat16", "CUDA device with bf16")
        return Precision("float32", "this CUDA device has no bf16")
    if device.type == "cpu":
        return _cpu_choice()
    return Precision("float32", f"auto keeps float32 on {device.type}")


@functools.cache
def _cpu_choice() -> Precision:
    """bf16 on this CPU only if it has bf16 instructions and a short probe finds it faster."""
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    native = _cpu_has_native_bf16()
    if not native:
        return Precision("float32", f"{capability} CPU without bf16 instructions")
    float32_s, bfloat16_s = _probe_seconds()
    speedup = float32_s / bfloat16_s
    if speedup >= _PROBE_MIN_SPEEDUP:
        return Precision("bfloat16", f"{capability} CPU, bf16 probe {speedup:.1f}x faster")
    return Precision("float32", f"{capability} CPU, bf16 probe only {speedup:.1f}x as fast")


def _cpu_has_native_bf16() -> bool:
    """AMX tiles or AVX-512 BF16, as PyTorch's own CPU feature checks report them."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def _probe_seconds(repeats: int = 3) -> tuple[float, float]:
    """Best-of-`repeats` seconds of one forward pass of a small stack shaped like the
    completion network's middle (3x3 convs, 64 channels, 64x64), in float32 and in bf16."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        layers: list[nn.Module] = []
        for dilation in (1, 2, 4, 1):
            layers += [nn.Conv2d(64, 64, 3, padding=dilation, dilation=dilation), nn.ReLU()]
    stack = nn.Sequential(*layers).eval().to(memory_format=torch.channels_last)
    sample = torch.randn(4, 64, 64, 64, generator=generator)
    sample = sample.contiguous(memory_format=torch.channels_last)

    def best(bf16: bool) -> float:
        context = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        times = []
        with torch.inference_mode(), context:
            stack(sample)  # warm-up: kernel selection
            for _ in range(repeats):
                start = time.perf_counter()
                stack(sample)
                times.append(time.perf_counter() - start)
        return min(times)

    return best(False), best(True)
