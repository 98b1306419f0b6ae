"""A real glcic daemon process for tests: under a private GLCIC_HOME, on loopback."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from glcic import ModelMetadata, new_model, save_model
from glcic.daemon.protocol import Client, read_connection_file

from .models import make_tiny_model


def daemon_cli(home: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "GLCIC_HOME": str(home), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "glcic.daemon.cli", *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


class Daemon:
    """A real daemon process under a private GLCIC_HOME.

    It runs in float32 unless the options name a precision: tests compare its fills bit for bit
    with in-process float32 completions, and `auto` chooses bf16 on CPUs with bf16 instructions.
    """

    def __init__(self, home: Path, *options: str) -> None:
        self.home = home
        self.options = options if "--precision" in options else (*options, "--precision", "float32")
        (home / "models").mkdir(parents=True, exist_ok=True)

    @property
    def connection_file(self) -> Path:
        return self.home / "run" / "daemon.json"

    def start(self) -> subprocess.CompletedProcess:
        result = daemon_cli(self.home, "start", *self.options)
        assert result.returncode == 0, result.stderr + self.log()
        return result

    def client(self, timeout: float = 20.0) -> Client:
        return Client(self.connection_file, timeout=timeout)

    def pid(self) -> int:
        return read_connection_file(self.connection_file).pid

    def log(self) -> str:
        path = self.home / "logs" / "daemon.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if not self.connection_file.exists():
            return
        pid = self.pid()
        daemon_cli(self.home, "stop", timeout=60)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        os.kill(pid, signal.SIGKILL)


def save_tiny(home: Path, name: str, seed: int = 0) -> Path:
    path = home / "models" / f"{name}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(make_tiny_model(seed), path)
    return path


@contextlib.contextmanager
def tiny_daemon(home: Path) -> Iterator[Daemon]:
    """A real daemon on CPU serving a tiny random-weight model named "tiny", stopped after."""
    save_tiny(home, "tiny")
    running = Daemon(home, "--model", "tiny", "--device", "cpu")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def many_holes_job(size: int = 3000) -> tuple[bytes, bytes]:
    """RGBA pixels and a mask with 36 separate holes: many crops, so seconds of work with a
    half-width model, with stops between crops where a cancel or a kill can land."""
    mask = np.zeros((size, size), np.uint8)
    for index in range(36):
        y, x = 100 + 500 * (index // 6), 100 + 500 * (index % 6)
        side = 10 + 3 * index
        mask[y : y + side, x : x + side] = 255
    return np.full((size, size, 4), 120, np.uint8).tobytes(), mask.tobytes()


def save_slow_model(home: Path, name: str = "slow") -> None:
    """A seeded half-width model in `home`'s model folder: each job takes seconds with it, far
    longer than a cancel's, a kill's or a reload's round trip."""
    torch.manual_seed(0)
    save_model(new_model(ModelMetadata(width=0.5)), home / "models" / f"{name}.safetensors")
