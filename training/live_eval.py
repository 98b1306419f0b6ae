"""Evaluation during training (`--eval-every`): does the run still improve the fills?

A new run with `eval_every` set splits a few photos off its data before the first step and never
trains on them; every `eval_every` steps (and once before training, which scores the starting
weights: for a fine-tuning run, the model it started from) the completion network fills one
seeded rectangular hole in each through the product's pipeline (`glcic.training.evaluate`,
pairing ``seeded-boxes-v1``), and hole PSNR, L1 and detail ratio go to the log, eval.csv and
TensorBoard. The photos held out are the last ones in name order: photos of one scene or video
sequence usually share a name prefix, so a whole run of them is held out together rather than
every n-th frame, whose neighbours the network would train on. Which photos were held out is
kept in the checkpoint, so a resumed run scores the same ones.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from glcic.atomic import atomic_write_bytes
from glcic.model_file import CompletionModel
from glcic.training.evaluate import evaluate, model_method
from glcic.training.reporting import csv_rows

#: At most this share of a folder is held out, so a small folder keeps most photos to train on.
MAX_HOLDOUT_SHARE = 0.2
EVAL_FIELDS = ("step", "photos", "psnr", "ssim", "l1", "detail")


def split_holdout(paths: Sequence[Path], count: int) -> tuple[list[Path], list[Path]]:
    """(photos to train on, photos held out): the last `count` in name order, at most a fifth."""
    ordered = sorted(paths)
    held = min(count, int(len(ordered) * MAX_HOLDOUT_SHARE))
    if held < 1:
        return ordered, []
    return ordered[:-held], ordered[-held:]


@dataclass(frozen=True)
class LiveScore:
    step: int
    photos: int
    psnr: float
    ssim: float
    l1: float
    detail: float

    @classmethod
    def from_row(cls, row: dict[str, str]) -> LiveScore:
        """A row of eval.csv (`append_score`)."""
        return cls(int(row["step"]), int(row["photos"]), *(float(row[n]) for n in EVAL_FIELDS[2:]))

    def describe(self) -> str:
        return (
            f"hole PSNR {self.psnr:.2f} dB, L1 {self.l1:.4f}, SSIM {self.ssim:.4f}, "
            f"detail {self.detail:.2f}"
        )


def score(model: CompletionModel, photos: Sequence[Path], step: int) -> LiveScore:
    """Evaluate `model` on the held-out photos, one seeded box hole each."""
    result = evaluate(list(photos), None, {"model": model_method(model)}, boxes=True, examples=0)
    overall = result.aggregates["model"]["all"]
    return LiveScore(
        step, result.images_evaluated, overall.psnr, overall.ssim, overall.l1, overall.detail
    )


def append_score(run_dir: Path, entry: LiveScore) -> None:
    """Add a row to RUN_DIR/eval.csv, dropping rows of steps at or after it (a resumed run
    repeats the steps after its checkpoint)."""
    path = run_dir / "eval.csv"
    rows = [row for row in read_scores(run_dir) if int(row["step"]) < entry.step]
    rows.append({name: getattr(entry, name) for name in EVAL_FIELDS})
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=EVAL_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    # Rewritten whole each time: atomically, so a crash mid-write never loses earlier scores.
    atomic_write_bytes(path, text.getvalue().encode("utf-8"))


def read_scores(run_dir: Path) -> list[dict[str, str]]:
    return csv_rows(run_dir / "eval.csv")
