"""The model that ships inside the package: it loads, says truthfully what it is, and completes.

These run against the real file under glcic/models/, so a broken export, a card that drifted from
the weights, or a package that lost its data files fails CI.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from support.daemon import Daemon, daemon_cli
from support.data import shared_data

import glcic.blending
from glcic import complete, load_model
from glcic.default_model import PACKAGED_MODEL, default_model_path
from glcic.training.border_band import (
    band_and_inside,
    band_and_inside_errors,
    border_masks,
    split_cast,
)
from glcic.training.config import TrainConfig, load_toml
from glcic.training.evaluate import evaluate, model_method
from glcic.training.export import phase_steps
from glcic.training.pairing import find_images, load_mask

REPO = Path(__file__).resolve().parent.parent
CARD = PACKAGED_MODEL.parent / "MODEL_CARD.md"
EXAMPLE = REPO / "examples" / "rocket.jpg"
EXAMPLE_MASK = REPO / "examples" / "rocket-mask.png"
#: Bins where it must beat both classical fills in PSNR and in L1 (every bin up to 40 %).
BAR_BINS = ("1-10%", "10-20%", "20-30%", "30-40%")
MAX_BYTES = 25_000_000
RECIPE = REPO / "recipes" / "sharp-l1.toml"
#: SHA-256 of the file's tensor bytes (all that follows the safetensors header): the weights
#: must be exactly those that were evaluated.
TENSOR_SHA256 = "827f96ff217dd9fca3f23f3ad5ab4e26c02fdcc784fbbd22ed238b450b043597"
#: The first 12 pairs of the card's evaluation (image, mask, PSNR, L1 of the default model), as
#: recorded when the table was made: the pipeline must still complete them the same way.
RECORDED_PAIRS = (
    ("101085.jpg", "00000.png", 20.9819, 0.063468),
    ("101085.jpg", "02000.png", 20.4294, 0.067486),
    ("101085.jpg", "04000.png", 18.5894, 0.085025),
    ("101085.jpg", "06000.png", 16.1902, 0.110991),
    ("101085.jpg", "08000.png", 16.4938, 0.105591),
    ("101085.jpg", "10000.png", 14.6886, 0.140874),
    ("101087.jpg", "00001.png", 19.1455, 0.052113),
    ("101087.jpg", "02001.png", 21.8727, 0.055386),
    ("101087.jpg", "04001.png", 18.9098, 0.070070),
    ("101087.jpg", "06001.png", 17.7079, 0.072978),
    ("101087.jpg", "08001.png", 17.6323, 0.085566),
    ("101087.jpg", "10001.png", 15.0641, 0.112826),
)


@pytest.fixture(scope="module")
def shipped():
    return load_model(PACKAGED_MODEL)


def _evaluation_rows(table: str) -> dict[str, dict[str, float]]:
    """Bin label -> {"pairs": count, "<method> <metric>": value} from a glcic-eval table."""
    lines = [line for line in table.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip().strip("*") for cell in line.strip("|").split("|")]
        rows[cells[0]] = {
            "pairs": int(cells[1]),
            **{name: float(value) for name, value in zip(header[3:], cells[3:], strict=True)},
        }
    return rows


def test_the_file_is_small_and_loads_as_float32(shipped) -> None:
    assert PACKAGED_MODEL.stat().st_size < MAX_BYTES
    assert all(p.dtype == torch.float32 for p in shipped.network.parameters())
    assert not shipped.network.training


def test_metadata_matches_the_training_that_made_it(shipped) -> None:
    meta = shipped.metadata
    config = meta.extra["training_config"]
    steps = meta.provenance.steps
    assert meta.provenance.source.startswith("glcic-train, fine-tuned from glcic 0.1.0's first")
    assert meta.width == config["width"]
    assert meta.train_image_size == config["image_size"]
    assert list(meta.hole_size_range) == [config["hole_min"], config["hole_max"]]
    # All three phases of the paper ran, as long as the recipe says, up to the exported step.
    step = sum(steps.values())
    assert steps == phase_steps(TrainConfig(**config), step)
    assert steps["completion"] > 0 and steps["discriminator"] > 0 and steps["joint"] > 0
    assert f"at step {step:,} of" in CARD.read_text()
    # Trained on the blended fill (poisson-l1), yet exported with the image edge pinned: on the
    # border-band benchmark this export's band was smaller so (the card's border section).
    assert config["reconstruction_loss"] == "poisson-l1" and meta.border_blend == "telea"
    assert "--border-blend telea" in CARD.read_text()
    assert "research" in meta.provenance.licence


def test_the_weights_are_the_evaluated_ones_and_the_data_is_named(shipped) -> None:
    raw = PACKAGED_MODEL.read_bytes()
    tensors_start = 8 + int.from_bytes(raw[:8], "little")
    assert hashlib.sha256(raw[tensors_start:]).hexdigest() == TENSOR_SHA256
    data = shipped.metadata.provenance.data
    assert "BSDS500" in data and "T91" in data and "8,771 photographs" in data
    # No path of our own machines: users have the data sets' names, not our folders.
    for text in (json.dumps(shipped.metadata.to_json()), CARD.read_text()):
        assert "shared/data" not in text and "../" not in text.replace("](../../", "")
        assert "/root" not in text and "/work" not in text and "/home" not in text


def test_the_recipe_regenerates_its_config(shipped) -> None:
    config = shipped.metadata.extra["training_config"]
    recipe = load_toml(RECIPE)
    assert {key: config[key] for key in recipe} == recipe


def test_the_recorded_evaluation_beats_the_classical_fills(shipped) -> None:
    rows = _evaluation_rows(shipped.metadata.extra["evaluation"])
    assert all(rows[label]["pairs"] == 100 for label in BAR_BINS)  # the full dev set
    model = next(name[: -len(" PSNR")] for name in rows["all"] if name.endswith(" PSNR"))
    for baseline in ("telea", "ns"):
        for label in BAR_BINS:
            assert rows[label][f"{model} PSNR"] > rows[label][f"{baseline} PSNR"], label
            assert rows[label][f"{model} L1"] < rows[label][f"{baseline} L1"], label


def test_the_model_card_states_what_the_file_holds(shipped) -> None:
    card = CARD.read_text()
    steps = shipped.metadata.provenance.steps
    for phase in ("completion", "discriminator", "joint"):
        assert re.search(rf"^\| {phase} \|.*\| {steps[phase]:,} \|$", card, re.MULTILINE), phase
    # The card's table is the one recorded in the weights, number for number.
    for line in shipped.metadata.extra["evaluation"].splitlines():
        if line.startswith("| ") and "%" in line:
            assert line in card
    assert "MODEL_CARD.md" in (REPO / "README.md").read_text()
    # The export command it gives writes the context shift the file holds (the evaluation and
    # the samples were made with it).
    shift = shipped.metadata.context_shift
    assert shift > 0
    assert f"--context-shift {shift:g}" in card
    assert f'--notes "{shipped.metadata.notes}"' in card
    assert f"--context-shift {shift:g}" in RECIPE.read_text()


def test_the_pipeline_still_gives_the_recorded_evaluation(shipped) -> None:
    """The card's numbers hold for the code that ships, not only for the code that made them:
    a change to the pipeline (the context shift, blending, scaling) moves these pairs."""
    images = find_images(shared_data("dev/bsds500-val"))[:2]
    masks = shared_data("masks/nvidia-irregular")
    result = evaluate(images, masks, {"default": model_method(shipped)})
    got = [
        (Path(pair.image).name, pair.hole, pair.scores["default"].psnr, pair.scores["default"].l1)
        for pair in result.pairs
    ]
    assert [g[:2] for g in got] == [r[:2] for r in RECORDED_PAIRS]
    for (*_, psnr, l1), (*_, recorded_psnr, recorded_l1) in zip(got, RECORDED_PAIRS, strict=True):
        assert psnr == pytest.approx(recorded_psnr, abs=0.01)
        assert l1 == pytest.approx(recorded_l1, rel=1e-3)


def test_the_border_band_is_smaller_than_with_the_old_edge_seed(shipped, monkeypatch) -> None:
    """Issue 15's border band on a real dev pair: BSDS500 102061 (a castle over water) with a
    30 % mask running into the left edge, the worst band of benchmarks/border_band.py's first
    ten pairs. The smoother seed of holes at a pinned edge (glcic.blending's BORDER_SEED) must
    keep the band's colour cast clearly under what the narrow fast-marching seed everywhere
    (glcic 0.1.0's) gave. (It does not remove the band: see the model card's known limits.)"""
    truth = np.asarray(Image.open(shared_data("dev/bsds500-val") / "102061.jpg").convert("RGB"))
    mask = load_mask(shared_data("masks/nvidia-irregular") / "07014.png", *truth.shape[:2])
    hole = mask > 0
    assert hole[:, 0].any()  # the hole touches the image's left edge
    band, _, _ = band_and_inside(complete(truth, mask, shipped), truth, hole)
    old_seed = (cv2.INPAINT_TELEA, glcic.blending.TELEA_RADIUS)
    monkeypatch.setattr(glcic.blending, "BORDER_SEED", old_seed)
    narrow, _, _ = band_and_inside(complete(truth, mask, shipped), truth, hole)
    assert band < 0.95 * narrow, (band, narrow)


def test_a_hole_at_the_border_gets_no_more_hue_cast_there_than_inside(shipped) -> None:
    """Issue 15's pink and blue band was a hue cast along the image edge. On the first ten
    pairs of benchmarks/border_band.py (dev photos with border-touching 30-60 % masks), the
    band's mean hue cast must not exceed that of the same holes' inside at the band's distances
    from known pixels (1.3 against 2.0 when written). The network's raw output fails it (glcic
    0.1.0's 4.4 against 2.1, this model's 2.4 against 1.9): the blend's smooth seed along a
    pinned edge (glcic.blending.BORDER_SEED) removes the hue. The brightness part stays larger
    at the band for every fill, classical ones included: photos darken toward their edges (see
    the model card's known limits)."""
    masks = border_masks(shared_data("masks/nvidia-irregular"))
    photos = find_images(shared_data("dev/bsds500-val"))[:10]
    band_hues, inside_hues = [], []
    for index, photo in enumerate(photos):
        truth = np.asarray(Image.open(photo).convert("RGB"))
        mask = load_mask(masks[index * 7], *truth.shape[:2])  # the benchmark's choice
        errors = band_and_inside_errors(complete(truth, mask, shipped), truth, mask > 0)
        assert errors is not None, photo.name
        band, _, matched = errors
        band_hues.append(split_cast(band)[1])
        inside_hues.append(split_cast(matched)[1])
    assert np.mean(band_hues) <= np.mean(inside_hues), (band_hues, inside_hues)


def test_it_is_the_default_and_fills_a_hole_far_better_than_its_mean_colour(
    shipped, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path))
    assert default_model_path() == PACKAGED_MODEL
    photo = np.asarray(Image.open(REPO / "examples" / "gallery" / "astronaut.jpg").convert("RGB"))
    mask = np.zeros(photo.shape[:2], np.uint8)
    mask[200:248, 300:340] = 255  # a 48x40 box over the astronaut's suit and the flag
    filled = complete(photo, mask, shipped)
    hole = mask > 0
    assert np.array_equal(filled[~hole], photo[~hole])
    truth = photo[hole].astype(np.float64)
    model_error = np.abs(filled[hole] - truth).mean()
    mean_fill_error = np.abs(np.asarray(shipped.metadata.mean) * 255 - truth).mean()
    assert model_error < 0.5 * mean_fill_error, (model_error, mean_fill_error)


@pytest.mark.slow
def test_the_readme_command_and_the_daemon_use_it_with_no_setup(tmp_path) -> None:
    home = tmp_path / "home"
    out = tmp_path / "rocket-completed.png"
    env = {**os.environ, "GLCIC_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "glcic.cli", "complete", str(EXAMPLE), str(EXAMPLE_MASK), str(out)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    original = np.asarray(Image.open(EXAMPLE).convert("RGB"))
    completed = np.asarray(Image.open(out).convert("RGB"))
    hole = np.asarray(Image.open(EXAMPLE_MASK).convert("L")) > 127
    assert np.array_equal(completed[~hole], original[~hole])
    assert not np.array_equal(completed[hole], original[hole])

    daemon = Daemon(home, "--device", "cpu", "--precision", "auto")  # no setup: both on auto
    daemon.start()
    try:
        listing = daemon_cli(home, "models")
        assert listing.returncode == 0, listing.stderr
        assert re.search(r"^\* default .*built-in", listing.stdout, re.MULTILINE), listing.stdout
        via_daemon = tmp_path / "via-daemon.png"
        result = daemon_cli(home, "complete", str(EXAMPLE), str(EXAMPLE_MASK), str(via_daemon))
        assert result.returncode == 0, result.stderr + daemon.log()
        assert np.array_equal(np.asarray(Image.open(via_daemon).convert("RGB")), completed)
    finally:
        daemon.stop()
