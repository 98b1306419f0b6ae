"""What `--device` accepts, everywhere it exists: `auto`, `cpu`, `cuda`, `cuda:N` or `mps`.

torch accepts many more device strings and answers a typo with a raw RuntimeError, or accepts
`cuda:7` on a machine with one GPU and fails at the first tensor. Checking here, before anything
loads, gives one line that says what was wrong and what would work.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from glcic.errors import InputError

if TYPE_CHECKING:
    import torch

#: The spellings a user may give, for help texts and messages.
DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"

_PATTERN = re.compile(r"(auto|cpu|mps|cuda)(?::(\d+))?")


def resolve_device(name: str) -> torch.device:
    """The torch device `name` means here; raises `InputError` for anything unusable.

    `auto` is the first of CUDA, MPS and the CPU that this machine has.
    """
    import torch

    text = name.strip().lower()
    match = _PATTERN.fullmatch(text)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise InputError(f"--device {name}: not a device; use {DEVICE_CHOICES}")
    kind = match.group(1)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"--device {name}: no CUDA device is available here; use cpu")
        index = match.group(2)
        count = torch.cuda.device_count()
        if index is not None and int(index) >= count:
            raise InputError(
                f"--device {name}: this machine has {count} CUDA device{'s' if count != 1 else ''}"
                f" (cuda:0 to cuda:{count - 1})"
            )
        return torch.device(text)
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(f"--device {name}: Apple's MPS is not available here; use cpu")
    return torch.device(kind)
