"""What a training run records: its log (train.log), metrics.csv, and TensorBoard events.

Metrics go to metrics.csv always and to TensorBoard event files when the optional `tensorboard`
package is installed. The progress bar and lines are `glcic.training.progress`'s, the sample
grids `glcic.training.samples`'s.
"""

from __future__ import annotations

import csv
import io
import logging
import sys
from pathlib import Path

import numpy as np

from glcic.atomic import atomic_write_bytes

log = logging.getLogger("glcic.training")

METRIC_FIELDS = ("step", "phase", "loss_mse", "loss_d", "loss_adv", "images_per_s", "elapsed_s")


#: `extra` for log records that are progress lines: written to train.log always, and to the
#: terminal only when no progress bar is drawn there (`setup_logging`).
PROGRESS_LINE = {"progress_line": True}


class _TerminalHandler(logging.StreamHandler):
    """stderr while a progress bar may be drawn on it: a message first clears the bar's line
    (the bar is redrawn within a second), and progress lines stay in train.log."""

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "progress_line", False):
            return
        self.stream.write("\r\033[K")
        super().emit(record)


def setup_logging(run_dir: Path, enabled: bool) -> None:
    """Log to run_dir/train.log and stderr (rank 0 only; other ranks log warnings only)."""
    logger = logging.getLogger("glcic.training")
    logger.setLevel(logging.INFO if enabled else logging.WARNING)
    logger.propagate = False
    close_logging()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    interactive = enabled and sys.stderr.isatty()
    stream = _TerminalHandler(sys.stderr) if interactive else logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    logger.addHandler(stream)
    if enabled:
        run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(run_dir / "train.log", encoding="utf-8")
        handler.setFormatter(formatter)
        logger.addHandler(handler)


def close_logging() -> None:
    """Detach and close the run's log handlers (train.log is closed, so its folder can go)."""
    logger = logging.getLogger("glcic.training")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


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

    def add_image(self, tag: str, image: np.ndarray, step: int) -> None:
        """An HxWx3 uint8 image into TensorBoard (when installed), e.g. a sample grid."""
        if self.tensorboard is not None:
            self.tensorboard.add_image(tag, image, step, dataformats="HWC")

    def add_scalars(self, values: dict[str, float], step: int) -> None:
        """Scalars beside the losses in TensorBoard (when installed), e.g. an evaluation's."""
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        self.file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file a run keeps (metrics.csv, eval.csv); none when it is missing."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def elapsed_from_metrics(run_dir: Path, step: int) -> float:
    """Training seconds up to `step` as metrics.csv records them, over every session.

    Runs from before the checkpoint kept its elapsed time wrote each session's time from 0, so
    where a row's time falls below the previous row's a session began, and the earlier
    session's last time is added. Rows written since are already cumulative, which this reads
    the same way.
    """
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return 0.0
    total, previous = 0.0, 0.0
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            try:
                row_step, elapsed = int(row["step"]), float(row["elapsed_s"])
            except (KeyError, TypeError, ValueError):
                continue
            if row_step > step:
                break
            if elapsed < previous:
                total += previous
            previous = elapsed
    return total + previous
