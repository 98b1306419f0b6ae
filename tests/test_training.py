"""Training on CPU with tiny configs: phases, gradient hygiene, resume, DDP, crashes, bad data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.data import shared_data

from glcic import load_model
from glcic.networks import CompletionNetwork, prepare_input, trainable_parameters
from glcic.training.checkpoint import list_checkpoints, load_checkpoint, load_latest_checkpoint
from glcic.training.cli import main
from glcic.training.config import PRESETS, ConfigError, TrainConfig, build_config
from glcic.training.data import EpochStream
from glcic.training.holes import freeform_hole, rectangle_hole, sample_hole
from glcic.training.losses import (
    harmonic_extension,
    hole_l1,
    hole_poisson_l1,
    hole_weave_excess,
    poisson_blended,
    spectral_excess,
)
from glcic.training.trainer import Trainer, hole_mse

TINY = ["--preset", "tiny-test"]


def _write_images(folder: Path, count: int = 6, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for index in range(count):
        size = (40 + 4 * index, 56)
        smooth = rng.integers(0, 255, (4, 4, 3)).astype(np.uint8)
        image = Image.fromarray(smooth).resize(size, Image.BICUBIC)
        image.save(folder / f"img{index}.png")
    return folder


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return _write_images(tmp_path / "data")


def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_holes_are_seeded_and_inside_the_local_patch() -> None:
    for seed in range(20):
        rng = np.random.default_rng(seed)
        hole = sample_hole(rng, 64, 32, 16, 24, freeform_fraction=0.5)
        x, y = hole.hole_box
        inside = hole.mask[y : y + 32, x : x + 32]
        assert inside.sum() == hole.mask.sum() > 0
        again = sample_hole(np.random.default_rng(seed), 64, 32, 16, 24, freeform_fraction=0.5)
        assert np.array_equal(again.mask, hole.mask) and again.real_box == hole.real_box
    rect = rectangle_hole(np.random.default_rng(1), 128, 96, 128)
    ys, xs = np.nonzero(rect)
    assert 96 <= np.ptp(xs) + 1 <= 128 and 96 <= np.ptp(ys) + 1 <= 128
    assert rect.sum() == (np.ptp(xs) + 1) * (np.ptp(ys) + 1)
    stroke = freeform_hole(np.random.default_rng(2), 128, 96, 128)
    assert 0 < stroke.sum() < stroke.size


def test_edge_holes_touch_the_crop_edge_inside_their_patch() -> None:
    sides_seen = set()
    for seed in range(200):
        hole = sample_hole(np.random.default_rng(seed), 64, 32, 8, 24, 0.5, edge_fraction=1.0)
        x, y = hole.hole_box
        assert hole.mask[y : y + 32, x : x + 32].sum() == hole.mask.sum() > 0
        ys, xs = np.nonzero(hole.mask)
        touching = {
            name
            for name, touches in (
                ("left", xs.min() == 0), ("right", xs.max() == 63),
                ("top", ys.min() == 0), ("bottom", ys.max() == 63),
            )
            if touches
        }  # fmt: skip
        assert 1 <= len(touching) <= 2
        sides_seen |= touching
    assert sides_seen == {"left", "right", "top", "bottom"}
    # A fraction of 0 draws nothing extra: runs without edge holes keep their random stream.
    plain = sample_hole(np.random.default_rng(5), 64, 32, 8, 24, 0.5)
    zero = sample_hole(np.random.default_rng(5), 64, 32, 8, 24, 0.5, edge_fraction=0.0)
    assert np.array_equal(plain.mask, zero.mask) and plain.real_box == zero.real_box
    share = np.mean([
        sample_hole(np.random.default_rng(s), 64, 32, 8, 24, 0.5, 0.25).mask[:, [0, 63]].any()
        or sample_hole(np.random.default_rng(s), 64, 32, 8, 24, 0.5, 0.25).mask[[0, 63]].any()
        for s in range(400)
    ])  # fmt: skip
    assert 0.15 < share < 0.35


def test_hole_mse_averages_over_hole_pixels_only() -> None:
    target = torch.zeros(1, 3, 8, 8)
    output = torch.full((1, 3, 8, 8), 0.5)
    small, large = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    small[..., :2, :2] = 1
    large[..., :6, :6] = 1
    assert hole_mse(output, target, small) == pytest.approx(0.25)
    assert hole_mse(output, target, large) == pytest.approx(0.25)


def _enclosed_hole() -> torch.Tensor:
    hole = torch.zeros(2, 1, 16, 20)
    hole[:, :, 3:12, 4:15] = 1
    hole[1, :, 6:9, 2:4] = 1  # an irregular second image
    return hole


def test_the_poisson_blend_removes_offsets_and_keeps_the_outputs_structure() -> None:
    hole = _enclosed_hole()
    target = torch.rand(2, 3, 16, 20)
    structure = torch.randn(2, 3, 16, 20) * 0.1
    offset = torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
    # A ramp's discrete Laplacian is zero, so the blend removes it whole, like a constant.
    ramp = torch.linspace(0, 0.4, 20).view(1, 1, 1, 20)
    output = target + offset + ramp
    blended = output + harmonic_extension(target - output, hole) * hole
    assert torch.allclose(blended * hole, target * hole, atol=1e-5)
    assert hole_poisson_l1(output, target, hole).item() == pytest.approx(
        0.25 * hole_l1(output, target, hole).item(), rel=1e-4
    )
    # Structure inside the hole is what the blend keeps, so the loss sees it.
    structured = target + structure * hole
    assert hole_poisson_l1(structured, target, hole) > 0.5 * hole_l1(structured, target, hole)
    assert hole_poisson_l1(target, target, hole).item() == 0.0
    # Outside the hole the extension is zero.
    assert (
        harmonic_extension(torch.randn(2, 3, 16, 20), hole)[(hole == 0).expand(2, 3, -1, -1)]
        .abs()
        .max()
        == 0
    )


def test_the_poisson_blends_gradient_is_exact() -> None:
    hole = _enclosed_hole()[:, :, 1:9, 2:12].double()
    hole[0, :, 0, 5:8] = 1  # touching the image edge: a free boundary there
    difference = torch.randn(2, 1, 8, 10, dtype=torch.float64, requires_grad=True)
    # CG is exact in at most as many iterations as the hole has pixels (here under 80).
    assert torch.autograd.gradcheck(
        lambda d: harmonic_extension(d, hole, iterations=80), (difference,)
    )


def test_hole_l1_averages_absolute_error_over_hole_pixels_only() -> None:
    target = torch.zeros(1, 3, 8, 8)
    output = torch.full((1, 3, 8, 8), -0.5)
    output[..., 6:, 6:] = 9.0  # outside both holes: must not count
    small, large = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    small[..., :2, :2] = 1
    large[..., :6, :6] = 1
    assert hole_l1(output, target, small) == pytest.approx(0.5)
    assert hole_l1(output, target, large) == pytest.approx(0.5)


def test_epoch_stream_shards_ranks_and_resumes_mid_stream() -> None:
    def take(stream, count):
        iterator = iter(stream)
        return [next(iterator) for _ in range(count)]

    first = take(EpochStream(10, seed=3, rank=0, world=2), 12)
    second = take(EpochStream(10, seed=3, rank=1, world=2), 12)
    assert {i for e, i in first[:5]}.isdisjoint({i for e, i in second[:5]})
    assert sorted(i for _, i in first[:5] + second[:5]) == list(range(10))
    assert [e for e, _ in first] == [0] * 5 + [1] * 5 + [2] * 2
    assert take(EpochStream(10, seed=3, rank=0, world=2, start=7), 5) == first[7:12]


def test_config_presets_toml_and_flags(tmp_path: Path) -> None:
    for name in PRESETS:
        build_config(name)
    assert TrainConfig().completion_steps == 90_000 and TrainConfig().alpha == 0.0004
    toml = tmp_path / "run.toml"
    toml.write_text("[train]\nbatch_size = 5\nflip = false\n")
    config = build_config("cpu-small", toml, {"hole_max": "60"})
    assert (config.batch_size, config.flip, config.hole_max, config.width) == (5, False, 60, 0.5)
    with pytest.raises(ConfigError, match="unknown setting 'batchsize'"):
        toml.write_text("batchsize = 5\n")
        build_config(None, toml)
    with pytest.raises(ConfigError, match="hole_min <= hole_max"):
        build_config(None, None, {"hole_min": "130"})
    with pytest.raises(ConfigError, match="must be a int"):
        build_config(None, None, {"batch_size": "many"})


def test_three_phases_end_to_end(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    assert main(["--data", str(data_dir), "--out", str(run), *TINY]) == 0
    state = load_latest_checkpoint(run)
    assert state["step"] == 8 and state["phase"] == "joint"
    assert [step for step, _ in list_checkpoints(run)] == [4, 6, 8]  # keep_checkpoints = 3
    metrics = (run / "metrics.csv").read_text().splitlines()
    phases = {line.split(",")[1] for line in metrics[1:]}
    assert phases == {"completion", "discriminator", "joint"}
    assert (run / "samples" / "step-000000008.png").is_file()
    assert "finished at step 8" in (run / "train.log").read_text()


def test_no_gradient_from_completion_step_reaches_discriminator(tmp_path, data_dir) -> None:
    config = build_config("tiny-test", None, {"completion_steps": "0", "discriminator_steps": "0"})
    trainer = Trainer(config, [data_dir], tmp_path / "run")
    batch = next(iter(trainer._loader()))
    before = {k: v.clone() for k, v in trainer.discriminator.state_dict().items()}
    losses = trainer.train_step(batch)
    assert set(losses) == {"loss_d", "loss_adv", "loss_mse"}
    assert all(p.grad is None for p in trainer.discriminator.parameters())
    assert any(p.grad is not None for p in trainer.completion.parameters())
    assert any(
        not torch.equal(before[k], v) for k, v in trainer.discriminator.state_dict().items()
    )  # the discriminator step itself did train it
    # The adversarial loss alone: its backward reaches the completion network only.
    images, masks, hole_box, _ = trainer._to_device(batch)
    trainer.completion.zero_grad(set_to_none=True)
    output = trainer.completion(prepare_input(images, masks, trainer.mean_tensor))
    completed = images * (1 - masks) + output * masks
    trainer._adversarial_loss(completed, hole_box).backward()
    assert all(p.grad is None for p in trainer.discriminator.parameters())
    assert all(p.requires_grad for p in trainer.discriminator.parameters())
    assert any(p.grad is not None for p in trainer.completion.parameters())


def test_resume_gives_identical_weights(tmp_path: Path, data_dir: Path) -> None:
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["--data", str(data_dir), "--out", str(straight), *TINY]) == 0
    # Stop inside the discriminator phase; resume with a worker process (samples must not
    # depend on the number of workers).
    assert main(["--data", str(data_dir), "--out", str(split), *TINY, "--stop-at", "4"]) == 0
    assert load_latest_checkpoint(split)["step"] == 4
    assert main(["--out", str(split), "--resume", "--workers", "1"]) == 0
    a, b = load_latest_checkpoint(straight), load_latest_checkpoint(split)
    assert a["step"] == b["step"] == 8
    _states_equal(a["completion"], b["completion"])
    _states_equal(a["discriminator"], b["discriminator"])
    for key in ("optimizer_completion", "optimizer_discriminator"):
        for index, slot in a[key]["state"].items():
            for name, value in slot.items():
                assert torch.equal(
                    torch.as_tensor(value), torch.as_tensor(b[key]["state"][index][name])
                )


def test_resume_applies_a_new_learning_rate(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    assert main(["--data", str(data_dir), "--out", str(run), *TINY, "--stop-at", "2"]) == 0
    assert main(["--out", str(run), "--resume", "--lr", "0.25", "--stop-at", "5"]) == 0
    state = load_latest_checkpoint(run)
    assert state["step"] == 5 and state["config"]["lr"] == 0.25
    for key in ("optimizer_completion", "optimizer_discriminator"):
        assert [g["lr"] for g in state[key]["param_groups"]] == [0.25]


def test_resume_logs_each_changed_setting(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    assert main(["--data", str(data_dir), "--out", str(run), *TINY, "--stop-at", "2"]) == 0
    assert main(["--out", str(run), "--resume", "--stop-at", "3"]) == 0
    assert "resumed with the run's own settings" in (run / "train.log").read_text()
    assert main(["--out", str(run), "--resume", "--lr-drop-step", "3", "--stop-at", "4"]) == 0
    log_text = (run / "train.log").read_text()
    assert "resumed with changed settings: lr_drop_step 0 -> 3" in log_text
    assert load_latest_checkpoint(run)["config"]["lr_drop_step"] == 3
    other = _write_images(tmp_path / "other", seed=1)
    assert main(["--data", str(other), "--out", str(run), "--resume", "--stop-at", "5"]) == 0
    assert f"resumed on other data: {data_dir} -> {other}" in (run / "train.log").read_text()


def test_resume_removes_what_a_killed_checkpoint_write_left(tmp_path: Path, data_dir: Path):
    """A SIGKILL during a checkpoint write leaves the atomic write's temporary file (hundreds of
    MB at paper size); the next start of the run removes it, and only it."""
    run = tmp_path / "run"
    assert main(["--data", str(data_dir), "--out", str(run), *TINY, "--stop-at", "2"]) == 0
    folder = run / "checkpoints"
    torn = folder / ".checkpoint-000000004.pt.k3x9_q1z.tmp"
    torn.write_bytes(b"half a checkpoint")
    unrelated = folder / "notes.tmp"
    unrelated.write_text("mine")
    assert main(["--out", str(run), "--resume", "--stop-at", "3"]) == 0
    assert not torn.exists()
    assert unrelated.read_text() == "mine"
    assert [p.name for p in sorted(folder.glob(".*"))] == []


def test_lr_drop_slows_only_the_completion_network_from_its_step(tmp_path: Path, data_dir):
    run, drop = tmp_path / "run", ["--lr-drop-step", "2", "--lr-drop-factor", "0.5"]
    assert main(["--data", str(data_dir), "--out", str(run), *TINY, *drop, "--stop-at", "2"]) == 0
    before = load_latest_checkpoint(run)
    assert [g["lr"] for g in before["optimizer_completion"]["param_groups"]] == [1.0]
    assert main(["--out", str(run), "--resume"]) == 0  # through the joint phase
    after = load_latest_checkpoint(run)
    assert after["step"] == 8
    assert [g["lr"] for g in after["optimizer_completion"]["param_groups"]] == [0.5]
    assert [g["lr"] for g in after["optimizer_discriminator"]["param_groups"]] == [1.0]
    for bad in ({"lr_drop_factor": 0.0}, {"lr_drop_factor": 2.0}, {"lr_drop_step": -1}):
        with pytest.raises(ConfigError, match="lr_drop"):
            build_config(overrides=bad)


def test_alpha_drop_changes_the_adversarial_weight_from_its_step(tmp_path: Path, data_dir):
    """Joint steps 5-7: dropping alpha to nothing at step 6 trains exactly as alpha 0 would from
    there, and not as the undropped alpha does."""
    common = ["--data", str(data_dir), *TINY, "--alpha", "1.0"]
    runs = {}
    for name, extra in (
        ("dropped", ["--alpha-drop-step", "6", "--alpha-drop-factor", "0"]),
        ("zero_from_6", []),
        ("kept", []),
    ):
        runs[name] = tmp_path / name
        assert main([*common, *extra, "--out", str(runs[name]), "--stop-at", "6"]) == 0
    assert main(["--out", str(runs["dropped"]), "--resume"]) == 0
    assert main(["--out", str(runs["zero_from_6"]), "--resume", "--alpha", "0"]) == 0
    assert main(["--out", str(runs["kept"]), "--resume"]) == 0
    states = {name: load_latest_checkpoint(run) for name, run in runs.items()}
    assert all(state["step"] == 8 for state in states.values())
    _states_equal(states["dropped"]["completion"], states["zero_from_6"]["completion"])
    differs = [
        not torch.equal(value, states["dropped"]["completion"][key])
        for key, value in states["kept"]["completion"].items()
        if value.is_floating_point()
    ]
    assert any(differs)
    config = build_config(
        overrides={"alpha": 0.01, "alpha_drop_step": 14, "alpha_drop_factor": 0.4}
    )
    assert config.alpha_at(13) == 0.01 and config.alpha_at(14) == pytest.approx(0.004)
    for bad in ({"alpha_drop_factor": 1.5}, {"alpha_drop_step": -1}, {"alpha": -0.1}):
        with pytest.raises(ConfigError, match="alpha"):
            build_config(overrides=bad)


def test_existing_run_without_resume_is_refused(tmp_path: Path, data_dir: Path, capsys) -> None:
    run = tmp_path / "run"
    assert main(["--data", str(data_dir), "--out", str(run), *TINY, "--stop-at", "2"]) == 0
    assert main(["--data", str(data_dir), "--out", str(run), *TINY]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "fresh"), "--resume"]) == 2


def test_run_and_export_subcommands_and_the_form_without_run(tmp_path, data_dir, capsys) -> None:
    run = tmp_path / "run"
    assert main(["run", "--data", str(data_dir), "--out", str(run), *TINY, "--stop-at", "2"]) == 0
    assert main(["--out", str(run), "--resume", "--stop-at", "4"]) == 0  # no 'run': still trains
    assert load_latest_checkpoint(run)["step"] == 4
    assert main(["run", "--out", str(run), "--resume"]) == 0
    assert load_latest_checkpoint(run)["step"] == 8
    shipped = tmp_path / "model.safetensors"
    assert main(["export", str(run), "--out", str(shipped)]) == 0
    assert f"exported {run} as {shipped}" in capsys.readouterr().out
    assert load_model(shipped).metadata.width == 0.0625
    # A user error is one line and status 2 in either form.
    for argv in (["run", "--out", str(tmp_path / "fresh"), "--resume"],
                 ["--out", str(tmp_path / "fresh"), "--resume"]):  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("glcic-train: error: ") and "no checkpoint to resume from" in err
        assert err.count("\n") == 1


def test_command_line_lists_subcommands_and_refuses_bad_ones(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    usage = capsys.readouterr().out
    assert "train a new run" in usage and "install a run's model" in usage
    for argv, message in (
        ([], "required: COMMAND"),
        (["train"], "invalid choice: 'train'"),
        (["run"], "glcic-train run: error: the following arguments are required: --out"),
        (["--data", "x"], "glcic-train: error: the following arguments are required: --out"),
        (["export", "RUN"], "one of the arguments --name --out is required"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err


def test_empty_folder_is_a_clear_error_before_training(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    assert main(["--data", str(empty), "--out", str(tmp_path / "run"), *TINY]) == 2
    err = capsys.readouterr().err
    assert "no usable image" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()
    assert main(["--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r2"), *TINY]) == 2


def test_corrupt_and_truncated_images_are_skipped(tmp_path: Path, data_dir: Path) -> None:
    (data_dir / "garbage.jpg").write_bytes(b"this is not a jpeg")
    good = (data_dir / "img0.png").read_bytes()
    (data_dir / "sub").mkdir()
    (data_dir / "sub" / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.fromarray(np.full((50, 60), 128, np.uint8)).save(data_dir / "sub" / "gray.png")
    Image.new("P", (50, 60), 3).save(data_dir / "sub" / "palette.gif")  # not a training suffix
    Image.new("P", (50, 60), 3).save(data_dir / "sub" / "palette.bmp")
    run = tmp_path / "run"
    assert main(["--data", str(data_dir), "--out", str(run), *TINY]) == 0
    log = (run / "train.log").read_text()
    assert "skipping unreadable image" in log and "garbage.jpg" in log
    assert "skipped as unreadable" in log


def test_fine_tune_from_model_and_export(tmp_path: Path, data_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path / "home"))
    first = tmp_path / "first"
    assert main(["--data", str(data_dir), "--out", str(first), *TINY, "--export", "base"]) == 0
    exported = tmp_path / "home" / "models" / "base.safetensors"
    base = load_model(exported)
    assert base.metadata.provenance.steps == {"completion": 3, "discriminator": 2, "joint": 3}
    assert base.metadata.train_image_size == 32 and base.metadata.hole_size_range == (8, 12)
    assert "terms" in base.metadata.provenance.licence
    state = load_latest_checkpoint(first)
    _states_equal(base.network.state_dict(), state["completion"])

    tuned = tmp_path / "tuned"
    args = ["--data", str(data_dir), "--out", str(tuned), *TINY, "--init", str(exported)]
    assert main(args) == 0
    tuned_state = load_checkpoint(list_checkpoints(tuned)[-1][1])
    assert tuned_state["mean"] == list(base.metadata.mean)
    assert main(["export", str(tuned), "--name", "tuned", "--float16"]) == 0
    assert load_model(tmp_path / "home" / "models" / "tuned.safetensors").metadata.width == 0.0625
    assert main(["export", str(tuned), "--name", "../evil"]) == 2
    mismatch = [*args[:3], str(tmp_path / "t2"), *args[4:], "--width", "0.125"]
    assert main(mismatch) == 2


def test_export_names_the_data_and_blends_the_border_as_the_run_trained(
    tmp_path, data_dir, monkeypatch
) -> None:
    """A file to publish names its data and its starting model instead of this machine's
    paths. The image-edge blend: a poisson-l1 run from scratch (whose loss blends with the edge
    free) asks for "mirror"; a fine-tuned run keeps its init model's, as it keeps the context
    shift; `--border-blend` overrides both."""
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path / "home"))
    l1 = ["--reconstruction-loss", "poisson-l1"]
    scratch, tuned_run = tmp_path / "scratch", tmp_path / "tuned"
    assert main(["--data", str(data_dir), "--out", str(scratch), *TINY, *l1, "--export", "l1"]) == 0
    from_scratch = load_model(tmp_path / "home" / "models" / "l1.safetensors").metadata
    assert from_scratch.border_blend == "mirror" and str(data_dir) in from_scratch.provenance.data
    assert main(["export", str(scratch), "--name", "pinned", "--border-blend", "telea"]) == 0
    # A run from scratch has no init model to name: saying so would forge its provenance.
    assert main(["export", str(scratch), "--name", "forged", "--init-name", "someone's"]) == 2
    argv = ["--data", str(data_dir), "--out", str(tuned_run), *TINY, *l1, "--init", "pinned"]
    assert main(argv) == 0
    assert "init_border_blend" in load_latest_checkpoint(tuned_run)

    out = tmp_path / "tuned.safetensors"
    names = ["--data-names", "our retouching archive", "--init-name", "glcic's base model"]
    assert main(["export", str(tuned_run), "--out", str(out), *names]) == 0
    tuned = load_model(out).metadata
    assert tuned.border_blend == "telea"  # inherited from "pinned", not chosen by the loss
    assert tuned.provenance.data == "our retouching archive"
    assert (
        tuned.provenance.source
        == "glcic-train, fine-tuned from glcic's base model, made by glcic-train"
    )
    assert str(tmp_path) not in json.dumps(tuned.to_json())
    assert "Fine-tuned from glcic's base model" in tuned.provenance.licence  # its terms follow
    override = ["export", str(tuned_run), "--out", str(out), "--force", "--border-blend"]
    assert main([*override, "mirror"]) == 0
    assert load_model(out).metadata.border_blend == "mirror"
    with pytest.raises(SystemExit) as exit_info:
        main([*override, "smear"])
    assert exit_info.value.code == 2


def test_real_photos_all_phases(tmp_path: Path) -> None:
    photos = shared_data("train/bsds500")
    subset = tmp_path / "photos"
    subset.mkdir()
    for path in sorted(photos.glob("*.jpg"))[:4]:
        (subset / path.name).symlink_to(path)
    run = tmp_path / "run"
    sizes = ["--image-size", "64", "--rescale-min", "64", "--rescale-max", "80"]
    holes = ["--local-size", "32", "--hole-min", "16", "--hole-max", "24"]
    mixed = ["--freeform-fraction", "0.5"]
    assert main(["--data", str(subset), "--out", str(run), *TINY, *sizes, *holes, *mixed]) == 0
    assert load_latest_checkpoint(run)["step"] == 8


_KILL_DURING_WRITE = textwrap.dedent(
    """
    import os, signal, sys, torch
    from pathlib import Path
    from glcic.training.checkpoint import save_checkpoint
    run = Path(sys.argv[1])
    save_checkpoint(run, 2, {"weights": torch.ones(1000)}, keep=3)
    real_save = torch.save
    def dying_save(obj, path):
        with open(path, "wb") as handle:
            handle.write(b"PK\\x03\\x04 half a checkpoint")
            handle.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    torch.save = dying_save
    save_checkpoint(run, 4, {"weights": torch.zeros(1000)}, keep=3)
    """
)


def test_sigkill_while_writing_checkpoint_keeps_previous(tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = subprocess.run([sys.executable, "-c", _KILL_DURING_WRITE, str(run)], timeout=60)
    assert result.returncode == -signal.SIGKILL
    assert [step for step, _ in list_checkpoints(run)] == [2]
    state = load_latest_checkpoint(run)
    assert state["step"] == 2 and torch.equal(state["weights"], torch.ones(1000))


def test_sigterm_saves_a_checkpoint_and_resumes(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "run"
    args = ["--data", str(data_dir), "--out", str(run), *TINY, "--total-steps", "100000",
            "--checkpoint-every", "100000", "--sample-every", "100000"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "glcic.training.cli", *args],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    for line in process.stderr:  # wait until it is really training
        if "step 20/" in line:
            break
    process.send_signal(signal.SIGTERM)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM, rest
    ((step, _),) = list_checkpoints(run)
    assert step >= 20
    assert main(["--out", str(run), "--resume", "--stop-at", str(step + 2)]) == 0
    assert load_latest_checkpoint(run)["step"] == step + 2


@pytest.mark.slow
def test_two_process_ddp_with_torchrun(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "glcic.training.cli", "--data", str(data_dir), "--out", str(run), *TINY,
    ]  # fmt: skip
    # Own process group, so a hang cannot leave worker processes behind.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    result = subprocess.CompletedProcess(command, process.returncode, "", stderr)
    assert result.returncode == 0, result.stderr[-3000:]
    log = (run / "train.log").read_text()
    assert "2 processes" in log
    assert log.count("parameters identical across 2 ranks") >= 3
    assert load_latest_checkpoint(run)["world_size"] == 2


def test_a_torchrun_rank_exits_with_its_status_and_no_interpreter_teardown(
    tmp_path: Path, monkeypatch
) -> None:
    """Interpreter teardown beside gloo's threads made a successful rank abort now and then;
    a rank now leaves through os._exit with the run's own status, its logs flushed."""
    exits: list[int] = []

    def fake_exit(status: int) -> None:
        exits.append(status)

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(os, "_exit", fake_exit)
    assert main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert exits == [2]
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "m.safetensors")]) == 2
    assert exits == [2]  # a single process returns normally


@pytest.mark.slow
# torch's inductor imports torch.utils.mkldnn, which warns about its own script_method use;
# glcic's code uses no TorchScript (tests/test_networks.py checks that with warnings as errors).
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_torch_compile_trains_and_checkpoints_plain_weights(tmp_path: Path, data_dir: Path) -> None:
    run = tmp_path / "compiled"
    assert main(["--data", str(data_dir), "--out", str(run), *TINY, "--compile", "true"]) == 0
    state = load_latest_checkpoint(run)
    assert not any(key.startswith("_orig_mod") for key in state["completion"])


def test_export_carries_the_last_evaluation_table(tmp_path, data_dir, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    assert main(["--data", str(data_dir), "--out", str(run), *TINY]) == 0
    (run / "eval").mkdir()
    (run / "eval" / "results.md").write_text("| holes | model PSNR |\n|---|---|\n| all | 21.5 |\n")
    assert main(["export", str(run), "--name", "evaluated"]) == 0
    model = load_model(tmp_path / "home" / "models" / "evaluated.safetensors")
    assert "21.5" in model.metadata.extra["evaluation"]
    assert model.metadata.extra["training_config"]["image_size"] == 32

    # Shipping a file somewhere else, with the data's terms and a note written into it.
    shipped = tmp_path / "package" / "default.safetensors"
    terms, notes = "research and educational use only", "the shipped default"
    args = ["export", str(run), "--out", str(shipped), "--float16", "--terms", terms]
    assert main([*args, "--notes", notes]) == 0
    model = load_model(shipped)
    assert terms in model.metadata.provenance.licence and model.metadata.notes == notes
    assert model.metadata.context_shift == 0.0
    assert not (tmp_path / "home" / "models" / "default.safetensors").exists()
    assert main([*args, "--context-shift", "0.5"]) == 2  # not over an existing file unasked
    assert load_model(shipped).metadata.context_shift == 0.0
    assert main([*args, "--context-shift", "0.5", "--force"]) == 0
    assert load_model(shipped).metadata.context_shift == 0.5
    for bad in ("1.5", "half"):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, "--force", "--context-shift", bad])
        assert exit_info.value.code == 2
    assert main(["export", str(run), "--out", str(tmp_path / "default.pt")]) == 2


def test_sigterm_to_the_process_group_with_loader_workers_still_checkpoints(
    tmp_path: Path, data_dir: Path
) -> None:
    """systemd, SLURM and terminals signal the whole group, DataLoader workers included."""
    run = tmp_path / "run"
    args = ["--data", str(data_dir), "--out", str(run), *TINY, "--workers", "2",
            "--total-steps", "100000", "--checkpoint-every", "100000",
            "--sample-every", "100000"]  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "glcic.training.cli", *args],
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    seen = []
    for line in process.stderr:
        seen.append(line)
        if "step 10/" in line:
            break
    os.killpg(process.pid, signal.SIGTERM)
    try:
        _, rest = process.communicate(timeout=180)  # generous: CI machines are shared
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise AssertionError("no exit after SIGTERM:\n" + "".join(seen[-20:])) from None
    assert process.returncode == 128 + signal.SIGTERM, rest
    ((step, _),) = list_checkpoints(run)
    assert step >= 10


def test_resume_refuses_changes_that_break_the_run(tmp_path: Path, data_dir: Path, capsys):
    run = tmp_path / "run"
    assert main(["--data", str(data_dir), "--out", str(run), *TINY, "--stop-at", "2"]) == 0
    before = (run / "config.json").read_text()
    assert main(["--out", str(run), "--resume", "--width", "0.125"]) == 2
    assert main(["--out", str(run), "--resume", "--batch-size", "4"]) == 2
    err = capsys.readouterr().err
    assert "cannot change width" in err and "batch_size" in err and "Traceback" not in err
    assert (run / "config.json").read_text() == before
    assert main(["--out", str(run), "--resume", "--total-steps", "9", "--stop-at", "3"]) == 0


def test_decoder_only_adam_trains_the_decoder_and_leaves_the_encoder(tmp_path, data_dir) -> None:
    """`trainable = decoder` moves only the layers after the last dilated convolution (their
    BatchNorm statistics aside), with Adam's state for exactly those; resume continues it."""
    run = tmp_path / "run"
    flags = ["--optimizer", "adam", "--lr", "1e-3", "--trainable", "decoder"]
    base = ["--data", str(data_dir), "--out", str(run), *TINY, *flags]
    assert main([*base, "--stop-at", "2"]) == 0
    first = load_latest_checkpoint(run)
    assert main(["--out", str(run), "--resume", "--stop-at", "3"]) == 0
    later = load_latest_checkpoint(run)

    network = CompletionNetwork(0.0625)
    decoder = {id(p) for p in trainable_parameters(network, "decoder")}
    names = {name for name, p in network.named_parameters() if id(p) in decoder}
    assert names and len(names) < len(dict(network.named_parameters()))
    for name, _ in network.named_parameters():
        moved = not torch.equal(first["completion"][name], later["completion"][name])
        assert moved == (name in names), name
    completion_state = later["optimizer_completion"]
    assert [len(g["params"]) for g in completion_state["param_groups"]] == [len(names)]
    assert {"exp_avg", "exp_avg_sq"} <= set(completion_state["state"][0])
    assert [g["lr"] for g in completion_state["param_groups"]] == [1e-3]
    assert "betas" in later["optimizer_discriminator"]["param_groups"][0]  # Adam's, too


def test_decoder_only_backward_skips_the_frozen_layers(tmp_path, data_dir) -> None:
    config = build_config("tiny-test", None, {"trainable": "decoder", "optimizer": "adam"})
    trainer = Trainer(config, [data_dir], tmp_path / "run")
    trainer.train_step(next(iter(trainer._loader())))
    trained = {id(p) for p in trainable_parameters(trainer.completion, "decoder")}
    for parameter in trainer.completion.parameters():
        assert (parameter.grad is not None) == (id(parameter) in trained)


def test_optimizer_and_trainable_are_checked_and_frozen_on_resume(tmp_path, data_dir, capsys):
    for bad in ({"optimizer": "sgd"}, {"trainable": "encoder"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            build_config(overrides=bad)
    run = tmp_path / "run"
    assert main(["--data", str(data_dir), "--out", str(run), *TINY, "--stop-at", "2"]) == 0
    assert main(["--out", str(run), "--resume", "--optimizer", "adam"]) == 2
    assert main(["--out", str(run), "--resume", "--trainable", "decoder"]) == 2
    err = capsys.readouterr().err
    assert "cannot change optimizer" in err and "cannot change trainable" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("name", "loss"), [("l1", hole_l1), ("poisson-l1", hole_poisson_l1)])
def test_the_chosen_reconstruction_loss_is_what_trains_and_the_log_keeps_mse(
    tmp_path, data_dir, name, loss
) -> None:
    with pytest.raises(ConfigError, match="reconstruction_loss must be one of mse, l1, poisson-l1"):
        build_config(overrides={"reconstruction_loss": "huber"})
    config = build_config("tiny-test", None, {"reconstruction_loss": name})
    trainer = Trainer(config, [data_dir], tmp_path / "run")
    reference = Trainer(config, [data_dir], tmp_path / "reference")  # same seed, same weights
    batch = next(iter(trainer._loader()))
    images, masks, _, _ = reference._to_device(batch)
    output = reference.completion(prepare_input(images, masks, reference.mean_tensor))
    loss(output, images, masks).backward()
    losses = trainer.train_step(batch)
    assert trainer.config.phase_at(0) == "completion"
    assert losses["loss_mse"].item() == pytest.approx(hole_mse(output, images, masks).item())
    for trained, expected in zip(
        trainer.completion.parameters(), reference.completion.parameters(), strict=True
    ):
        assert torch.allclose(trained.grad, expected.grad, atol=1e-6)  # the chosen loss's gradient


def test_the_discriminators_can_judge_the_blended_fill(tmp_path, data_dir, monkeypatch) -> None:
    with pytest.raises(ConfigError, match="adversarial_input must be one of raw, blended"):
        build_config(overrides={"adversarial_input": "pasted"})
    overrides = {
        "completion_steps": "0", "discriminator_steps": "1",
        "reconstruction_loss": "poisson-l1", "adversarial_input": "blended",
    }  # fmt: skip
    trainer = Trainer(build_config("tiny-test", None, overrides), [data_dir], tmp_path / "run")
    judged: list[torch.Tensor] = []
    discriminator_step = trainer._discriminator_step

    def recording(images, completed, hole_box, real_box):
        judged.append(completed.detach().clone())
        return discriminator_step(images, completed, hole_box, real_box)

    monkeypatch.setattr(trainer, "_discriminator_step", recording)
    batch = next(iter(trainer._loader()))
    images, masks, _, _ = trainer._to_device(batch)
    for phase in ("discriminator", "joint"):
        assert trainer.config.phase_at(trainer.step) == phase
        with torch.no_grad():
            output = trainer.completion(prepare_input(images, masks, trainer.mean_tensor))
        blended = images * (1 - masks) + poisson_blended(output, images, masks) * masks
        losses = trainer.train_step(batch)
        trainer.step += 1
        assert torch.allclose(judged[-1], blended, atol=1e-5), phase
        # Not the raw paste: the blend moved the hole's colours to meet the known pixels.
        assert not torch.allclose(judged[-1], images * (1 - masks) + output * masks, atol=1e-3)
    assert set(losses) == {"loss_d", "loss_adv", "loss_mse"}


@pytest.mark.parametrize(
    "recipe",
    sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.toml")),
    ids=lambda path: path.name,
)
def test_every_recipe_is_a_config_the_trainer_accepts(recipe: Path) -> None:
    """Recipes are run by hand, hours apart: a broken one must fail here, not at its next start."""
    config = build_config(config_file=recipe)
    assert config.total_steps > 0


def test_the_weave_penalty_charges_a_checkerboard_beyond_the_photos_own() -> None:
    torch.manual_seed(0)
    truth = torch.rand(2, 3, 24, 24) * 0.1 + 0.45
    hole = torch.zeros(2, 1, 24, 24)
    hole[..., 4:20, 4:20] = 1.0
    assert hole_weave_excess(truth, truth, hole).item() == 0.0  # the photo's own texture is free
    rows, columns = torch.meshgrid(torch.arange(24), torch.arange(24), indexing="ij")
    for period in (2, 4):  # the 2- and 4-px weaves, each seen
        checker = (((rows // (period // 2)) + (columns // (period // 2))) % 2).float() * 0.2 - 0.1
        woven = (truth + checker).requires_grad_()
        penalty = hole_weave_excess(woven, truth, hole)
        assert penalty.item() > 0.1
        penalty.backward()
        assert woven.grad[..., 4:20, 4:20].abs().sum() > 0
        assert woven.grad[..., :3, :].abs().sum() == 0  # known pixels are not charged
    smooth = truth * 0.0 + torch.linspace(0, 1, 24)  # a ramp: no weave at all
    assert hole_weave_excess(smooth, truth, hole).item() == 0.0


def test_the_spectral_penalty_charges_patterns_far_more_than_texture() -> None:
    """A plaid or a checkerboard laid over a blurred fill costs many times what the photo's own
    kind of texture (the same photo's, shifted) does; the photo itself and a blur cost ~0."""
    torch.manual_seed(0)
    truth = 0.3 * torch.nn.functional.avg_pool2d(torch.rand(2, 3, 64, 64), 3, 1, 1)  # a grain
    truth = truth + torch.linspace(0, 0.3, 64)  # and a ramp
    hole = torch.zeros(2, 1, 64, 64)
    hole[..., 12:52, 8:56] = 1.0
    blur = torch.nn.functional.avg_pool2d(truth, 9, 1, 4, count_include_pad=False)
    rows, columns = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    plaid = 0.03 * (torch.sin(rows * torch.pi / 4) + torch.sin(columns * torch.pi / 4))
    checker = 0.03 * ((((rows // 2) + (columns // 2)) % 2) * 2 - 1)
    textured = blur + (truth - blur).roll(5, -1)
    assert spectral_excess(truth, truth, hole).item() == 0.0
    assert spectral_excess(blur, truth, hole).item() < 0.05
    texture_cost = spectral_excess(textured, truth, hole).item()
    for pattern in (plaid, checker):
        woven = (blur + pattern).requires_grad_()
        cost = spectral_excess(woven, truth, hole)
        assert cost.item() > 4 * texture_cost, (cost.item(), texture_cost)
        cost.backward()
        assert woven.grad[..., 12:52, 8:56].abs().sum() > 0
        assert woven.grad[..., :12, :].abs().sum() == 0  # known pixels are not charged
