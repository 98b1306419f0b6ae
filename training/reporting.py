"""What a person watching a training run sees: progress, metrics files, sample images.

On a terminal a single progress line is redrawn; otherwise (a log file, CI) plain lines are
written every `log_every` steps. Metrics go to metrics.csv always and to TensorBoard event files
when the optional `tensorboard` package is installed.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from glcic.atomic import atomic_write_bytes

log = logging.getLogger("glcic.training")

METRIC_FIELDS = ("step", "phase", "loss_mse", "loss_d", "loss_adv", "images_per_s", "elapsed_s")


def setup_logging(run_dir: Path, enabled: bool) -> None:
    """Log to run_dir/train.log and stderr (rank 0 only; other ranks log warnings only)."""
    logger = logging.getLogger("glcic.training")
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    logger.addHandler(stream)
    if enabled:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        handler.setFormatter(formatter)
        logger.addHandler(handler)


class MetricsWriter:
    """Appends rows to metrics.csv (rows past a resumed step are dropped first) and TensorBoard."""

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        self.path = run_dir / "metrics.csv"
        self._truncate_after(resume_step)
        new = not self.path.exists()
        self.file = open(self.path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        self.writer = csv.DictWriter(self.file, fieldnames=METRIC_FIELDS)
        if new:
            self.writer.writeheader()
        self.tensorboard = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step)
        except ImportError:
            log.info("TensorBoard not installed (pip install 'glcic[tensorboard]'); CSV only")

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        with open(self.path, newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_bytes(self.path, buffer.getvalue().encode())

    def write(self, row: dict) -> None:
        self.writer.writerow(row)
        self.file.flush()
        if self.tensorboard is not None:
            for key in ("loss_mse", "loss_d", "loss_adv", "images_per_s"):
                if row.get(key) not in (None, ""):
                    self.tensorboard.add_scalar(key, float(row[key]), int(row["step"]))

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


class Progress:
    """Redraws one line on a terminal; writes log lines elsewhere."""

    def __init__(self, total_steps: int, start_step: int) -> None:
        self.total = total_steps
        self.interactive = sys.stderr.isatty()
        self.started = time.monotonic()
        self.start_step = start_step

    def update(self, step: int, phase: str, losses: dict[str, float], images_per_s: float) -> None:
        done = step - self.start_step
        elapsed = time.monotonic() - self.started
        remaining = (self.total - step) * elapsed / done if done > 0 else float("nan")
        loss_text = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        text = (
            f"{phase:13s} step {step}/{self.total} ({100 * step / self.total:5.1f}%) "
            f"{loss_text} | {images_per_s:.1f} img/s | ETA {_duration(remaining)}"
        )
        if self.interactive:
            sys.stderr.write("\r\033[K" + text)
            sys.stderr.flush()
        log.log(logging.DEBUG if self.interactive else logging.INFO, text)

    def close(self) -> None:
        if self.interactive:
            sys.stderr.write("\n")


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else (f"{seconds // 60}m{seconds % 60:02d}s")
    )


def sample_grid(images: torch.Tensor, masks: torch.Tensor, outputs: torch.Tensor) -> bytes:
    """PNG bytes of rows [input with the hole shown white | completed | ground truth]."""
    holes = masks.expand_as(images)
    shown = images * (1 - holes) + holes
    completed = images * (1 - holes) + outputs * holes
    rows = [torch.cat([s, c, g], dim=2) for s, c, g in zip(shown, completed, images, strict=True)]
    grid = torch.cat(rows, dim=1).clamp(0, 1).mul(255).round().byte()
    buffer = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).cpu().numpy()).save(buffer, format="PNG")
    return buffer.getvalue()
