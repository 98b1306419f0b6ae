"""What a person watching a run sees while it trains: a progress bar, progress lines, an ETA.

Everything here is driven by time, not by step counts: a half-width network on a busy CPU may
take a minute for 50 steps, and a user who sees nothing for that long thinks the run hung. On a
terminal a bar is redrawn every `BAR_SECONDS`; progress lines (with the losses) go to train.log,
and to stderr when it is not a terminal, every `LINE_SECONDS` or `log_every` steps, whichever
comes first, and after the first step of a session.

The ETA covers every phase still ahead, each at its own speed: a joint step (a discriminator
update, then a completion update through the discriminator) costs about half as much again as a
completion step. Speeds measured in a phase are kept in the checkpoint, so a resumed run starts
with them rather than guessing again; a phase not yet measured is estimated from a measured one
with `RELATIVE_COST`.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from typing import IO

from glcic.training.config import TrainConfig

PHASES = ("completion", "discriminator", "joint")
BAR_SECONDS = 1.0
LINE_SECONDS = 60.0
#: Seconds per step relative to a completion step, at the default model's shape on a 2-core
#: CPU: 24 images/s completion and 17 joint (glcic/models/MODEL_CARD.md), and the discriminator
#: phase 1.7 times as fast as the joint one (the sharp run's metrics.csv: 8.2 against 4.8).
RELATIVE_COST = {"completion": 1.0, "discriminator": 0.85, "joint": 1.4}
#: Weight of the newest step in a phase's running mean of seconds per step.
SMOOTHING = 0.05
#: A step that took more than this many times the running mean counts as this many times: a
#: process suspended (SIGSTOP, a laptop's lid) or starved by another job for minutes would
#: otherwise multiply the ETA for a hundred steps, and be saved so in the checkpoint. A lasting
#: slowdown still shows: each slow step raises the mean by up to 15 %.
OUTLIER_FACTOR = 4.0


class PhaseSpeeds:
    """Seconds per step of each phase: a running mean of the measured steps."""

    def __init__(self, saved: Mapping[str, float] | None = None) -> None:
        self.seconds = {k: float(v) for k, v in (saved or {}).items() if k in RELATIVE_COST}

    def record(self, phase: str, seconds: float) -> None:
        old = self.seconds.get(phase)
        if old is None:
            self.seconds[phase] = seconds
        else:
            seconds = min(seconds, OUTLIER_FACTOR * old)
            self.seconds[phase] = old + SMOOTHING * (seconds - old)

    def per_step(self, phase: str) -> float | None:
        """Measured seconds per step, or an estimate from another phase; None before any."""
        if phase in self.seconds:
            return self.seconds[phase]
        for known, seconds in self.seconds.items():
            return seconds * RELATIVE_COST[phase] / RELATIVE_COST[known]
        return None

    def remaining(self, config: TrainConfig, step: int, end: int) -> float:
        """Seconds from `step` to `end` over the phases between them (NaN before any measure)."""
        total = 0.0
        bounds = (
            config.completion_steps,
            config.completion_steps + config.discriminator_steps,
            config.total_steps,
        )
        start = 0
        for phase, stop in zip(PHASES, bounds, strict=True):
            steps = max(0, min(stop, end) - max(start, step))
            start = stop
            if steps:
                per_step = self.per_step(phase)
                if per_step is None:
                    return math.nan
                total += steps * per_step
        return total


def duration(seconds: float) -> str:
    """3h05m, 4m07s, or ? for an unknown time."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """Decides when to show progress and draws it; the trainer measures and reports to it."""

    def __init__(
        self,
        config: TrainConfig,
        start_step: int,
        end_step: int,
        speeds: PhaseSpeeds,
        *,
        clock: Callable[[], float] = time.monotonic,
        stream: IO[str] | None = None,
        interactive: bool | None = None,
        elapsed_before: float = 0.0,
    ) -> None:
        self.config = config
        self.end = end_step
        self.speeds = speeds
        self.clock = clock
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.started = clock()
        self.elapsed_before = elapsed_before
        self.last_line_time = -math.inf
        self.last_line_step = start_step
        self.last_bar = -math.inf
        self.first_line_done = False

    def elapsed(self) -> float:
        """Seconds this run has trained, over every session (`elapsed_before` is the earlier)."""
        return self.elapsed_before + self.clock() - self.started

    def eta(self, step: int) -> float:
        return self.speeds.remaining(self.config, step, self.end)

    def line_due(self, step: int) -> bool:
        """Whether a progress line is due after `step`: the session's first step, `log_every`
        steps or `LINE_SECONDS` since the last line, or the last step."""
        return (
            not self.first_line_done
            or step - self.last_line_step >= self.config.log_every
            or self.clock() - self.last_line_time >= LINE_SECONDS
            or step >= self.end
        )

    def line(self, step: int, phase: str, losses: Mapping[str, float], images_per_s: float) -> str:
        """The progress line for `step`; marks it shown."""
        self.first_line_done = True
        self.last_line_time = self.clock()
        self.last_line_step = step
        return f"{phase:13s} {self._status(step, losses, images_per_s)}"

    def bar(self, step: int, phase: str, losses: Mapping[str, float], images_per_s: float) -> None:
        """Redraw the terminal's bar, at most every `BAR_SECONDS` (nothing off a terminal)."""
        now = self.clock()
        if not self.interactive or (now - self.last_bar < BAR_SECONDS and step < self.end):
            return
        self.last_bar = now
        status = self._status(step, losses, images_per_s)
        columns = shutil.get_terminal_size((100, 20)).columns
        width = max(10, min(30, columns - len(status) - len(phase) - 6))
        filled = round(width * step / self.config.total_steps)
        text = f"{phase} [{'#' * filled}{'.' * (width - filled)}] {status}"
        self.stream.write("\r\033[K" + text[: columns - 1])
        self.stream.flush()

    def _status(self, step: int, losses: Mapping[str, float], images_per_s: float) -> str:
        total = self.config.total_steps
        loss_text = " ".join(f"{k} {v:.4f}" for k, v in losses.items())
        stop = "" if self.end == total else f", stopping at {self.end}"
        return (
            f"step {step}/{total} ({100 * step / total:5.1f}%{stop}) {loss_text} | "
            f"{images_per_s:.1f} img/s | elapsed {duration(self.elapsed())} | "
            f"ETA {duration(self.eta(step))}"
        )

    def close(self) -> None:
        if self.interactive and self.last_bar > -math.inf:
            self.stream.write("\n")
            self.stream.flush()
