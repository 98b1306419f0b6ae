"""Precision choice (float32 / bfloat16 autocast): what `auto` picks, and every place that runs
the network honouring it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from glcic import complete, load_model, precision
from glcic.errors import InputError
from glcic.precision import _cpu_choice, resolve_precision
from glcic.training.cli import main as train_main
from glcic.training.config import ConfigError, build_config


@pytest.fixture(autouse=True)
def _fresh_cpu_choice():
    """Each test sees the once-per-process CPU decision made anew."""
    _cpu_choice.cache_clear()
    yield
    _cpu_choice.cache_clear()


def _fake_cpu(monkeypatch, native: bool, seconds: tuple[float, float]) -> list[int]:
    probes: list[int] = []

    def probe() -> tuple[float, float]:
        probes.append(1)
        return seconds

    monkeypatch.setattr("glcic.precision._cpu_has_native_bf16", lambda: native)
    monkeypatch.setattr("glcic.precision._probe_seconds", probe)
    return probes


def test_explicit_choices_are_kept() -> None:
    assert resolve_precision("float32", "cpu", "training").name == "float32"
    assert resolve_precision("bfloat16", "cpu", "completion").name == "bfloat16"
    with pytest.raises(InputError, match="float32"):
        resolve_precision("float16", "cpu", "training")
    with pytest.raises(InputError, match="not on mps"):
        resolve_precision("bfloat16", "mps", "completion")


def test_auto_on_a_cpu_without_bf16_instructions_is_float32_without_probing(monkeypatch) -> None:
    probes = _fake_cpu(monkeypatch, native=False, seconds=(1.0, 0.1))
    chosen = resolve_precision("auto", "cpu", "training")
    assert chosen.name == "float32" and "without bf16" in chosen.reason
    assert probes == []


def test_auto_on_a_bf16_cpu_follows_the_probe_once_per_process(monkeypatch) -> None:
    probes = _fake_cpu(monkeypatch, native=True, seconds=(1.0, 0.27))
    first = resolve_precision("auto", "cpu", "training")
    assert first.name == "bfloat16" and "3.7x" in first.reason
    assert resolve_precision("auto", "cpu", "training") == first
    assert len(probes) == 1
    _cpu_choice.cache_clear()
    _fake_cpu(monkeypatch, native=True, seconds=(1.0, 0.9))  # bf16 instructions, little gain
    assert resolve_precision("auto", "cpu", "training").name == "float32"


def test_auto_completion_follows_the_dev_set_check(monkeypatch) -> None:
    _fake_cpu(monkeypatch, native=True, seconds=(1.0, 0.25))
    assert resolve_precision("auto", "cpu", "completion").name == "bfloat16"  # check passed
    monkeypatch.setattr(precision, "COMPLETION_BF16_VALIDATED", False)  # a model that failed it
    chosen = resolve_precision("auto", "cpu", "completion")
    assert chosen.name == "float32" and "validated" in chosen.reason


def test_the_real_probe_times_both_precisions() -> None:
    from glcic.precision import _probe_seconds

    state = torch.get_rng_state()
    float32_s, bfloat16_s = _probe_seconds(repeats=1)
    assert float32_s > 0 and bfloat16_s > 0
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched


def test_bfloat16_completion_stays_close_and_exact_outside(tiny_model_file, photo) -> None:
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[60:140, 90:190] = 255
    exact = complete(photo, mask, load_model(tiny_model_file, precision="float32"))
    model = load_model(tiny_model_file, precision="bfloat16")
    assert model.precision.name == "bfloat16"
    fast = complete(photo, mask, model)
    assert np.array_equal(fast[mask == 0], photo[mask == 0])
    difference = np.abs(fast.astype(int) - exact.astype(int))[mask > 0]
    assert difference.mean() < 2.0 and not np.array_equal(fast, exact)


def test_training_config_checks_and_logs_the_precision(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="precision"):
        build_config("tiny-test", None, {"precision": "float16"})
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for index in range(4):
        pixels = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(pixels).resize((48, 48)).save(data / f"{index}.png")
    run = tmp_path / "run"
    args = ["--data", str(data), "--out", str(run), "--preset", "tiny-test"]
    assert train_main([*args, "--precision", "bfloat16"]) == 0
    assert "precision: bfloat16 (asked for)" in (run / "train.log").read_text()
    # Precision does not shape the networks: a resumed run may change it.
    assert train_main(["--out", str(run), "--resume", "--precision", "float32",
                       "--total-steps", "10"]) == 0  # fmt: skip
    assert "precision: float32 (asked for)" in (run / "train.log").read_text()


def test_cli_reports_the_precision_and_refuses_unknown_ones(tmp_path, tiny_model_file, photo):
    image, mask_path = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(photo).save(image)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[80:140, 100:180] = 255
    Image.fromarray(mask).save(mask_path)
    command = [sys.executable, "-m", "glcic.cli", "complete", str(image), str(mask_path),
               str(tmp_path / "out.png"), "--model", str(tiny_model_file)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    expected = resolve_precision("auto", "cpu", "completion").name  # what auto gets here
    assert "(network " in done.stdout and f"s, {expected})" in done.stdout
    refused = subprocess.run(
        [*command, "--precision", "float16"], capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "invalid choice: 'float16'" in refused.stderr
    assert "Traceback" not in refused.stderr
