"""The `glcic` command as a user runs it: real processes, files in, files out, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.data import shared_data

from glcic import cli, cli_support, threads
from glcic.devices import resolve_device
from glcic.errors import InputError


def run_glcic(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "glcic.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def inputs(tmp_path: Path, photo: np.ndarray) -> tuple[Path, Path]:
    image = tmp_path / "photo.png"
    Image.fromarray(photo).save(image)
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[80:140, 100:180] = 255
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    return image, mask_path


def test_complete_writes_png(tmp_path, inputs, tiny_model_file, photo) -> None:
    image, mask = inputs
    out = tmp_path / "out" / "done.png"
    result = run_glcic("complete", str(image), str(mask), str(out), "--model", str(tiny_model_file))
    # A folder that does not exist is a typo to report, not a folder to create.
    assert result.returncode == 2
    assert result.stderr.strip() == f"glcic: error: {out}: the folder {out.parent} does not exist"
    assert not out.parent.exists()
    out.parent.mkdir()
    result = run_glcic("complete", str(image), str(mask), str(out), "--model", str(tiny_model_file))
    assert result.returncode == 0, result.stderr
    assert "1 hole region completed" in result.stdout
    done = np.asarray(Image.open(out))
    assert done.shape == photo.shape
    keep = np.ones(photo.shape[:2], bool)
    keep[80:140, 100:180] = False
    assert np.array_equal(done[keep], photo[keep])
    assert not np.array_equal(done[~keep], photo[~keep])


def test_mask_from_alpha_channel_and_jpeg_output(tmp_path, inputs, tiny_model_file) -> None:
    image, _ = inputs
    selection = np.zeros((240, 320, 4), np.uint8)
    selection[10:50, 10:50, 3] = 255  # opaque = selected, the rest transparent
    mask = tmp_path / "selection.png"
    Image.fromarray(selection).save(mask)
    out = tmp_path / "done.jpg"
    result = run_glcic("complete", str(image), str(mask), str(out), "--model", str(tiny_model_file))
    assert result.returncode == 0, result.stderr
    assert Image.open(out).format == "JPEG"


def test_rgba_image_keeps_alpha(tmp_path, inputs, tiny_model_file, photo) -> None:
    _, mask = inputs
    alpha = np.full(photo.shape[:2], 200, np.uint8)
    image = tmp_path / "rgba.png"
    Image.fromarray(np.dstack([photo, alpha])).save(image)
    out = tmp_path / "rgba-done.png"
    result = run_glcic("complete", str(image), str(mask), str(out), "--model", str(tiny_model_file))
    assert result.returncode == 0, result.stderr
    assert np.array_equal(np.asarray(Image.open(out))[..., 3], alpha)


def test_several_holes_show_progress(tmp_path, inputs, tiny_model_file) -> None:
    image, _ = inputs
    mask = np.zeros((240, 320), np.uint8)
    mask[5:20, 5:20] = 255
    mask[200:230, 280:310] = 255
    mask_path = tmp_path / "two.png"
    Image.fromarray(mask).save(mask_path)
    out = tmp_path / "two-done.png"
    result = run_glcic(
        "complete", str(image), str(mask_path), str(out), "--model", str(tiny_model_file),
        "--blend", "none",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "completing 2 hole regions" in result.stderr


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda d, i, m, f: [str(d / "nope.png"), str(m), str(d / "o.png")], "no such file"),
        (lambda d, i, m, f: [str(i), str(m), str(d / "o.xyz")], "unknown image format"),
        (lambda d, i, m, f: [str(f), str(m), str(d / "o.png")], "not an image"),
        (lambda d, i, m, f: [str(i), str(d / "black.png"), str(d / "o.png")], "selects nothing"),
        (lambda d, i, m, f: [str(i), str(i), str(d / "o.png")], "almost no known pixels"),
        (lambda d, i, m, f: [str(i), str(m), str(d / "o.png"), "--model", str(i)], "not a glcic"),
        (lambda d, i, m, f: [str(i), str(m), str(d / "o.png"), "--blend", "x"], "invalid choice"),
    ],
)
def test_bad_input_exits_2_without_traceback(tmp_path, inputs, tiny_model_file, make_args, message):
    image, mask = inputs
    text_file = tmp_path / "notes.png"
    text_file.write_text("not an image")
    Image.fromarray(np.zeros((240, 320), np.uint8)).save(tmp_path / "black.png")
    args = make_args(tmp_path, image, mask, text_file)
    if "--model" not in args:
        args += ["--model", str(tiny_model_file)]
    result = run_glcic("complete", *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "o.png").exists()


def test_size_mismatch_is_reported(tmp_path, inputs, tiny_model_file) -> None:
    image, _ = inputs
    small = tmp_path / "small.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(small)
    result = run_glcic(
        "complete", str(image), str(small), str(tmp_path / "o.png"), "--model",
        str(tiny_model_file),
    )  # fmt: skip
    assert result.returncode == 2 and "must be the same size" in result.stderr


def test_info_prints_metadata(tiny_model_file) -> None:
    result = run_glcic("info", str(tiny_model_file), "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout)["width"] == 0.125


def test_info_describes_the_default_model_for_people() -> None:
    """Plain `glcic info` is for reading: labelled, wrapped lines and the stored table."""
    result = run_glcic("info", "default")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("file ") and "default.safetensors" in lines[0]
    assert any(line.startswith("network ") and "width 0.5" in line for line in lines)
    assert any(line.startswith("steps ") and "joint " in line for line in lines)
    assert any(line.startswith("licence ") for line in lines)
    assert "evaluation stored with the file:" in lines
    assert any(line.startswith("| 1-10% |") for line in lines)
    prose = [line for line in lines[1:] if not line.startswith("|")]  # the path is never cut
    assert max(map(len, prose)) <= 120
    assert "{" not in result.stdout  # not JSON


def test_info_describes_a_bare_model_without_inventing_fields(tiny_model_file) -> None:
    result = run_glcic("info", str(tiny_model_file))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    megabytes = tiny_model_file.stat().st_size / 1e6
    assert lines[0] == f"file        {tiny_model_file} ({megabytes:.1f} MB)"  # never wrapped
    assert any(line.startswith("network ") and "width 0.125 " in line for line in lines)
    assert not any(line.startswith("steps ") for line in lines)
    assert "evaluation stored with the file:" not in lines


def test_info_validates_the_file_as_loading_does(tmp_path, tiny_model_file) -> None:
    """`info` used to describe broken files and exit 0; now it refuses what loading refuses."""
    data = tiny_model_file.read_bytes()
    header_end = 8 + int.from_bytes(data[:8], "little")
    entry = json.loads(data[8:header_end])["layers.0.bias"]
    assert entry["dtype"] == "F32"
    start = header_end + entry["data_offsets"][0]
    broken = {
        "truncated": data[:-10],
        "trailing": data + b"extra",
        "nan": data[:start] + np.float32("nan").tobytes() + data[start + 4 :],
    }
    for name, content in broken.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        result = run_glcic("info", str(path))
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.count("\n") == 1 and str(path) in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_real_photo_with_irregular_mask(tmp_path, tiny_model_file) -> None:
    photo = shared_data("dev/bsds500-val")
    masks = shared_data("masks/nvidia-irregular")
    image_path = sorted(p for p in photo.iterdir() if p.suffix.lower() in (".jpg", ".png"))[0]
    mask_path = sorted(masks.glob("*.png"))[150]
    image = Image.open(image_path).convert("RGB")
    mask = Image.open(mask_path).convert("L").resize(image.size, Image.NEAREST)
    resized_mask = tmp_path / "mask.png"
    mask.save(resized_mask)
    out = tmp_path / "done.png"
    result = run_glcic(
        "complete", str(image_path), str(resized_mask), str(out), "--model", str(tiny_model_file)
    )
    assert result.returncode == 0, result.stderr
    keep = np.asarray(mask) == 0
    assert np.array_equal(np.asarray(Image.open(out))[keep], np.asarray(image)[keep])


# --- what every command shares (glcic.cli_support) -----------------------------------------------


def test_a_reader_that_stops_early_ends_the_command_quietly(tiny_model_file) -> None:
    """`glcic info X | head`: the reader is gone before the output is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "glcic.cli", "info", str(tiny_model_file)],
            stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert result.stderr == ""  # no traceback, no "Exception ignored"
    assert result.returncode == cli_support.EXIT_BROKEN_PIPE == 141


def test_run_command_reports_a_closed_pipe_once(monkeypatch, capsys) -> None:
    def writes_to_a_closed_pipe() -> int:
        raise BrokenPipeError(32, "Broken pipe")

    assert cli_support.run_command("glcic", writes_to_a_closed_pipe) == 141
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("device", ["bogus", "cuda:x", "cpu:1", "gpu"])
def test_a_bad_device_is_one_line(tmp_path, inputs, tiny_model_file, device, capsys) -> None:
    image, mask = inputs
    args = [str(image), str(mask), str(tmp_path / "o.png"), "--model", str(tiny_model_file)]
    assert cli.main(["complete", *args, "--device", device]) == 2
    assert capsys.readouterr().err == (
        f"glcic: error: --device {device}: not a device; use auto, cpu, cuda, cuda:N or mps\n"
    )
    assert not (tmp_path / "o.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a CPU-only machine")
def test_cuda_without_cuda_says_so() -> None:
    with pytest.raises(InputError, match="no CUDA device is available here; use cpu"):
        resolve_device("cuda:0")
    assert resolve_device("auto").type in ("cpu", "mps")
    assert resolve_device(" CPU ") == torch.device("cpu")


@pytest.mark.parametrize(("value", "message"), [("0", "between 1 and 256"), ("two", "whole")])
def test_threads_must_be_a_positive_count(inputs, tmp_path, value, message, capsys) -> None:
    image, mask = inputs
    with pytest.raises(SystemExit) as exit_:
        cli.main(["complete", str(image), str(mask), str(tmp_path / "o.png"), "--threads", value])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_threads_are_set_for_the_run(inputs, tmp_path, tiny_model_file, monkeypatch) -> None:
    chosen: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", chosen.append)
    image, mask = inputs
    args = [str(image), str(mask), str(tmp_path / "o.png"), "--model", str(tiny_model_file)]
    assert cli.main(["complete", *args, "--threads", "3"]) == 0
    assert cli.main(["complete", *args]) == 0
    assert chosen == [3, threads.default_threads()]


@pytest.mark.parametrize(("cores", "expected"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_the_default_leaves_one_core_free(monkeypatch, cores, expected) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: cores)
    assert threads.default_threads() == expected
    assert threads.default_threads_rule().endswith(f": {expected} here")
    monkeypatch.setenv("OMP_NUM_THREADS", "5")  # the user's own choice is kept
    assert threads.default_threads() == 5
    assert threads.default_threads_rule() == "5, from OMP_NUM_THREADS"
    monkeypatch.setenv("OMP_NUM_THREADS", "lots")  # not a count: the rule again
    assert threads.default_threads() == expected
