"""Training checkpoints: written atomically, the last K kept, the newest loadable one resumed.

A checkpoint holds everything a run needs to continue exactly: both networks, both optimizers,
the step, the config, the mean colour, where the data stream stands, and every RNG state. It is
loaded with torch's weights-only unpickler, so a checkpoint file cannot run code either.

In float32 a resumed run's weights equal an uninterrupted run's bit for bit. Under bf16
autocast on a CPU they do not, and neither do two uninterrupted runs: oneDNN's bf16 weight
gradients differ in the last bits from run to run.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch

from glcic.atomic import atomic_path
from glcic.errors import GlcicError

CHECKPOINT_FORMAT = 1
_NAME = re.compile(r"^checkpoint-(\d{9})\.pt$")

log = logging.getLogger("glcic.training")


class CheckpointError(GlcicError):
    """No usable checkpoint where one was expected."""


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"checkpoint-{step:09d}.pt"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) pairs, oldest first; temporary files of interrupted writes are ignored."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


#: What `glcic.atomic` names a checkpoint while it is written: ".checkpoint-N.pt.RANDOM.tmp".
_TEMPORARY = re.compile(r"^\.checkpoint-\d{9}\.pt\..+\.tmp$")


def remove_interrupted_writes(run_dir: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a killed run left behind.

    A SIGKILL (or a power cut) during a write leaves the temporary file, as large as a
    checkpoint (hundreds of MB at paper size), which nothing would ever read or remove. Called
    when a run starts or resumes, before it writes anything, by the one process that writes.
    """
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    removed = []
    for path in folder.iterdir():
        if _TEMPORARY.match(path.name) and path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log.info("removed %d unfinished checkpoint file(s) of an interrupted write", len(removed))
    return removed


def save_checkpoint(run_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write atomically, then delete all but the newest `keep` checkpoints."""
    path = checkpoint_path(run_dir, step)
    state = {"format": CHECKPOINT_FORMAT, "step": step, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for _, old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for damaged files
        raise CheckpointError(
            f"{path}: cannot be loaded ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a glcic training checkpoint of format {CHECKPOINT_FORMAT}"
        )
    return state


def load_latest_checkpoint(run_dir: Path) -> dict[str, Any]:
    """The newest checkpoint that loads; damaged newer ones are reported and passed over."""
    candidates = list_checkpoints(run_dir)
    if not candidates:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from")
    for _, path in reversed(candidates):
        try:
            return load_checkpoint(path)
        except CheckpointError as error:
            log.warning("%s; trying an older checkpoint", error)
    raise CheckpointError(f"{run_dir}: none of {len(candidates)} checkpoints can be loaded")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
