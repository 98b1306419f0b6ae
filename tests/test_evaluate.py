"""`glcic-eval`: metrics against known values, the pairing rule, and whole runs end to end."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image
from support.data import shared_data

from glcic.errors import InputError
from glcic.training import eval_cli, eval_report, metrics, pairing
from glcic.training import evaluate as ev

# --- helpers -------------------------------------------------------------------------------------


def smooth_image(seed: int, height: int = 96, width: int = 128) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r = 128 + 100 * np.sin(xx / (17.0 + seed) + seed)
    g = 128 + 100 * np.cos(yy / (13.0 + 2 * seed))
    b = (xx + yy + 40 * seed) / (height + width + 120) * 255
    return np.clip(np.stack([r, g, b], -1), 0, 255).astype(np.uint8)


def disk_mask(ratio: float, size: int = 512) -> np.ndarray:
    radius = math.sqrt(ratio * size * size / math.pi)
    yy, xx = np.mgrid[0:size, 0:size]
    inside = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= radius**2
    return np.where(inside, 255, 0).astype(np.uint8)


def write_images(folder: Path, count: int, height: int = 96, width: int = 128) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"img{index}.png"
        Image.fromarray(smooth_image(index, height, width)).save(path)
        paths.append(path)
    return paths


def write_masks(folder: Path) -> Path:
    """One disk mask per bin, its area in the middle of the bin's hole-ratio range."""
    folder.mkdir(parents=True, exist_ok=True)
    for bin_index in range(6):
        mask = disk_mask((bin_index + 0.5) / 10)
        Image.fromarray(mask).save(folder / f"{bin_index * 2000 + 7:05d}.png")
    return folder


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    write_images(images, 3)
    return images, write_masks(tmp_path / "masks")


# --- metrics -------------------------------------------------------------------------------------


def test_identical_images_score_perfectly() -> None:
    image = np.random.default_rng(1).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    hole = np.zeros((20, 24), np.uint8)
    hole[5:15, 6:18] = 255
    assert metrics.psnr(image, image, hole) == metrics.PSNR_CAP == 100.0
    assert metrics.mean_l1(image, image, hole) == 0.0
    assert metrics.ssim(image, image, hole) == pytest.approx(1.0, abs=1e-12)


def test_constant_offset_gives_known_psnr_and_l1() -> None:
    truth = np.random.default_rng(2).integers(0, 200, (16, 16, 3), dtype=np.uint8)
    result = truth + np.uint8(10)
    hole = np.zeros((16, 16), np.uint8)
    hole[4:12, 4:12] = 255
    assert metrics.psnr(result, truth, hole) == pytest.approx(20 * math.log10(255 / 10))
    assert metrics.mean_l1(result, truth, hole) == pytest.approx(10 / 255)


def test_metrics_look_only_inside_the_hole() -> None:
    truth = np.full((16, 16, 3), 100, np.uint8)
    result = truth.copy()
    result[:, :8] = 0  # wrong outside the hole only
    hole = np.zeros((16, 16), np.uint8)
    hole[:, 12:] = 255
    assert metrics.psnr(result, truth, hole) == metrics.PSNR_CAP
    assert metrics.mean_l1(result, truth, hole) == 0.0


def test_metrics_refuse_an_empty_hole() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="empty"):
        metrics.psnr(image, image, np.zeros((8, 8), np.uint8))


def reference_ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """SSIM written out directly: explicit Gaussian weights over every 11x11 window."""
    radius = 5
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    weights = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    maps = []
    for channel in range(a.shape[2]):
        x = np.pad(a[..., channel].astype(np.float64), radius, mode="reflect")
        y = np.pad(b[..., channel].astype(np.float64), radius, mode="reflect")
        wx = sliding_window_view(x, (11, 11))
        wy = sliding_window_view(y, (11, 11))
        mx = (wx * weights).sum(axis=(2, 3))
        my = (wy * weights).sum(axis=(2, 3))
        vx = (weights * (wx - mx[..., None, None]) ** 2).sum(axis=(2, 3))
        vy = (weights * (wy - my[..., None, None]) ** 2).sum(axis=(2, 3))
        cov = (weights * (wx - mx[..., None, None]) * (wy - my[..., None, None])).sum(axis=(2, 3))
        maps.append(((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    return np.mean(maps, axis=0)


def test_ssim_matches_an_independent_implementation() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    noise = rng.integers(-40, 41, truth.shape)
    result = np.clip(truth.astype(int) + noise, 0, 255).astype(np.uint8)
    hole = np.zeros((23, 31), np.uint8)
    hole[3:17, 9:28] = 255
    expected = reference_ssim_map(result, truth)
    np.testing.assert_allclose(metrics.ssim_map(result, truth), expected, rtol=0, atol=1e-9)
    assert metrics.ssim(result, truth, hole) == pytest.approx(expected[hole > 0].mean(), abs=1e-9)
    assert 0.0 < metrics.ssim(result, truth, hole) < 1.0


# --- pairing -------------------------------------------------------------------------------------


def test_find_masks_groups_by_bin_and_pairs_every_image_with_every_bin(tmp_path: Path) -> None:
    tiny = np.zeros((4, 4), np.uint8)
    for name in ("00003.png", "00001.png", "02001.png", "04000.png", "10005.png"):
        Image.fromarray(tiny).save(tmp_path / name)
    for ignored in ("12000.png", "123.png", "0001.png", "00002.jpg"):
        Image.fromarray(tiny).save(tmp_path / ignored)
    (tmp_path / "notes.txt").write_text("not a mask")

    masks = pairing.find_masks(tmp_path)
    assert {b: [p.name for p in paths] for b, paths in masks.items()} == {
        0: ["00001.png", "00003.png"],
        1: ["02001.png"],
        2: ["04000.png"],
        5: ["10005.png"],
    }
    pairs = pairing.pair_masks(3, masks)
    assert [(p.image_index, pairing.BIN_LABELS[p.bin], p.mask.name) for p in pairs] == [
        (0, "1-10%", "00001.png"),
        (0, "10-20%", "02001.png"),
        (0, "20-30%", "04000.png"),
        (0, "50-60%", "10005.png"),
        (1, "1-10%", "00003.png"),
        (1, "10-20%", "02001.png"),
        (1, "20-30%", "04000.png"),
        (1, "50-60%", "10005.png"),
        (2, "1-10%", "00001.png"),
        (2, "10-20%", "02001.png"),
        (2, "20-30%", "04000.png"),
        (2, "50-60%", "10005.png"),
    ]


def test_find_images_is_recursive_case_insensitive_and_sorted(tmp_path: Path) -> None:
    for name in ("b/z.PNG", "a.jpg", "b/a.TIF", "c.webp", "notes.txt", "b/c.gif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in pairing.find_images(tmp_path)]
    assert found == ["a.jpg", "b/a.TIF", "b/z.PNG", "c.webp"]


def test_load_mask_resizes_nearest_and_thresholds(tmp_path: Path) -> None:
    mask = np.zeros((512, 512), np.uint8)
    mask[:, :256] = 200  # above 127: hole
    mask[:256, 256:] = 100  # below: kept
    Image.fromarray(mask).save(tmp_path / "00000.png")
    loaded = pairing.load_mask(tmp_path / "00000.png", 96, 128)
    assert loaded.shape == (96, 128) and set(np.unique(loaded)) == {0, 255}
    assert (loaded[:, :64] == 255).all() and (loaded[:, 64:] == 0).all()


def test_boxes_are_seeded_by_index_and_fit_the_image() -> None:
    assert pairing.box_for(5, 321, 481) == pairing.box_for(5, 321, 481)
    assert pairing.box_for(5, 321, 481) != pairing.box_for(6, 321, 481)
    for index in range(20):
        x, y, w, h = pairing.box_for(index, 321, 481)
        assert 64 <= w <= 128 and 64 <= h <= 128
        assert 0 <= x <= 481 - w and 0 <= y <= 321 - h
    x, y, w, h = pairing.box_for(0, 100, 90)  # clipped to half the sides
    assert w <= 45 and h <= 50 and x + w <= 90 and y + h <= 100
    assert pairing.ratio_bin(5, 100) == 0 and pairing.ratio_bin(10, 100) == 1
    assert pairing.ratio_bin(59, 100) == 5 and pairing.ratio_bin(90, 100) == 5


# --- the command, end to end ---------------------------------------------------------------------


def test_end_to_end_with_model_and_baselines(dataset, tiny_model_file, tmp_path, capsys) -> None:
    images, masks = dataset
    out = tmp_path / "out"
    argv = ["--images", str(images), "--masks", str(masks), "--model", str(tiny_model_file)]
    code = eval_cli.main([*argv, "--baseline", "telea,ns", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    for name in ("results.json", "results.md", "montage.png"):
        assert (out / name).is_file()
    assert captured.out == (out / "results.md").read_text()
    assert "| 1-10% |" in captured.out and "| **all** |" in captured.out

    document = json.loads((out / "results.json").read_text())
    assert document["pairing"] == "nvidia-irregular-by-bin-v1"
    assert document["methods"] == ["tiny", "telea", "ns"]
    assert document["arguments"]["baseline"] == ["telea", "ns"]
    assert document["skipped_count"] == 0 and document["images_evaluated"] == 3
    for name in ("tiny", "telea", "ns"):
        rows = document["summary"][name]
        assert list(rows) == [*pairing.BIN_LABELS, "all"]
        assert all(rows[label]["count"] == 3 for label in pairing.BIN_LABELS)
        assert rows["all"]["count"] == 18
        assert 0 < rows["all"]["psnr"] < 100 and 0 <= rows["all"]["l1"] <= 1
    assert len(document["pairs"]) == 18
    for pair in document["pairs"]:
        low = pairing.BIN_LABELS.index(pair["bin"]) / 10
        assert low - 0.02 <= pair["hole_ratio"] <= low + 0.12
        for scores in pair["methods"].values():
            assert scores["changed_outside"] == 0
    montage = Image.open(out / "montage.png")
    assert montage.height > 6 * eval_report.MONTAGE_CELL_HEIGHT


def test_blend_none_scores_the_network_pixels_and_is_recorded(
    dataset, tiny_model_file, tmp_path, capsys
) -> None:
    images, masks = dataset
    argv = ["--images", str(images), "--masks", str(masks), "--model", str(tiny_model_file)]
    documents = {}
    for blend in ("poisson", "none"):
        out = tmp_path / blend
        assert eval_cli.main([*argv, "--blend", blend, "--out", str(out)]) == 0
        documents[blend] = json.loads((out / "results.json").read_text())
        assert documents[blend]["arguments"]["blend"] == blend
    raw, blended = (documents[b]["summary"]["tiny"]["all"]["l1"] for b in ("none", "poisson"))
    assert raw != pytest.approx(blended, rel=1e-3)
    with pytest.raises(SystemExit) as exited:  # argparse's own usage error
        eval_cli.main([*argv, "--blend", "soft", "--out", str(tmp_path / "bad")])
    assert exited.value.code == 2
    assert "invalid choice: 'soft'" in capsys.readouterr().err


def test_boxes_mode_end_to_end(tmp_path, tiny_model_file, capsys) -> None:
    images = tmp_path / "images"
    write_images(images, 3, height=160, width=200)
    out = tmp_path / "out"
    code = eval_cli.main(
        ["--images", str(images), "--boxes", "--model", str(tiny_model_file), "--out", str(out)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads((out / "results.json").read_text())
    assert document["pairing"] == "seeded-boxes-v1"
    assert document["summary"]["tiny"]["all"]["count"] == 3
    assert [pair["hole"].startswith("box ") for pair in document["pairs"]] == [True] * 3
    assert (out / "montage.png").is_file()


def test_limit_evaluates_only_the_first_images(dataset, tmp_path, capsys) -> None:
    images, masks = dataset
    out = tmp_path / "out"
    argv = ["--images", str(images), "--masks", str(masks), "--baseline", "telea"]
    assert eval_cli.main([*argv, "--limit", "1", "--out", str(out)]) == 0
    document = json.loads((out / "results.json").read_text())
    assert {pair["image"] for pair in document["pairs"]} == {str(images / "img0.png")}
    assert document["summary"]["telea"]["all"]["count"] == 6


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty images", "no images found"),
        ("no masks", "no mask files"),
        ("unknown baseline", "unknown baseline 'patchmatch'"),
        ("no methods", "no methods"),
        ("masks and boxes", "give either a masks folder or boxes, not both"),
        ("neither masks nor boxes", "give a masks folder (--masks DIR) or use rectangular --boxes"),
        ("limit 0", "limit must be at least 1, got 0"),
    ],
)
def test_errors_exit_2_without_traceback(case, message, dataset, tmp_path, capsys) -> None:
    images, masks = dataset
    empty = tmp_path / "empty"
    empty.mkdir()
    baseline = "telea"
    if case == "empty images":
        images = empty
    elif case == "no masks":
        masks = empty
    elif case == "unknown baseline":
        baseline = "telea,patchmatch"
    elif case == "no methods":
        baseline = ""
    argv = ["--images", str(images), "--masks", str(masks), "--baseline", baseline]
    if case == "masks and boxes":
        argv.append("--boxes")
    elif case == "neither masks nor boxes":
        argv = argv[:2] + argv[4:]
    elif case == "limit 0":
        argv += ["--limit", "0"]
    code = eval_cli.main([*argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("glcic-eval: error: ") and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # refused before anything was made or loaded


def test_interrupt_exits_130(dataset, tmp_path, capsys, monkeypatch) -> None:
    images, masks = dataset

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(eval_cli, "evaluate", interrupted)
    argv = ["--images", str(images), "--masks", str(masks), "--baseline", "telea"]
    assert eval_cli.main([*argv, "--out", str(tmp_path / "out")]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_unreadable_image_is_skipped_and_counted(dataset, tmp_path, capsys) -> None:
    images, masks = dataset
    (images / "broken.png").write_text("this is not a PNG")
    out = tmp_path / "out"
    argv = ["--images", str(images), "--masks", str(masks), "--baseline", "ns"]
    assert eval_cli.main([*argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "glcic-eval: warning: " in err and "broken.png" in err
    document = json.loads((out / "results.json").read_text())
    assert document["skipped_count"] == 1
    assert document["skipped"][0]["path"].endswith("broken.png")
    assert document["images_evaluated"] == 3


def test_no_readable_image_is_an_error(tmp_path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "broken.png").write_text("nope")
    masks = write_masks(tmp_path / "masks")
    argv = ["--images", str(images), "--masks", str(masks), "--baseline", "telea"]
    assert eval_cli.main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "glcic-eval: error: no image could be evaluated" in err


# --- the Python API ------------------------------------------------------------------------------


def test_api_hides_the_hole_and_keeps_methods_comparable(dataset, tiny_model) -> None:
    images, masks = dataset
    seen: list[np.ndarray] = []

    def peek(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        seen.append(image)
        return image.copy()  # "fills" with whatever the method was given

    def refuse_big(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if np.count_nonzero(mask) > 0.5 * mask.size:
            raise InputError("too big")
        return ev.baseline_method("telea")(image, mask)

    methods = {
        "tiny": ev.model_method(tiny_model, blend="none"),
        "peek": peek,
        "picky": refuse_big,
    }
    warnings: list[str] = []
    result = ev.evaluate(pairing.find_images(images), masks, methods, warn=warnings.append)

    assert all(not image.flags.writeable for image in seen)
    # The pixels under the hole were blanked, so copying the input cannot reproduce the truth.
    assert all(pair.scores["peek"].psnr < 30 for pair in result.pairs)
    assert all(count == 0 for pair in result.pairs for count in pair.changed_outside.values())
    # The 50-60% bin was refused by one method, so it is skipped for all of them.
    assert len(result.pairs) == 15 and len(result.skipped) == 3
    assert all(entry.hole == "10007.png" for entry in result.skipped)
    assert len(warnings) == 3
    assert set(result.aggregates["tiny"]) == {*pairing.BIN_LABELS[:5], "all"}
    assert result.aggregates["picky"]["all"].count == 15

    table = result.to_markdown()
    assert "50-60%" not in table and table.count("**") >= 2 * 6
    document = json.loads(json.dumps(result.to_json({"note": "api"})))
    assert document["arguments"] == {"note": "api"}
    # One example per bin (img i for bin i where it can), then filled up to six.
    labels = [example.label.splitlines() for example in result.examples]
    assert [label[0].split(":")[0] for label in labels[:5]] == list(pairing.BIN_LABELS[:5])
    assert [label[1] for label in labels[:3]] == ["img0", "img1", "img2"]
    assert len(result.examples) == 6 and len(result.examples[0].cells) == 5


def test_baseline_method_keeps_pixels_outside_the_hole() -> None:
    image = smooth_image(4)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[30:60, 40:90] = 255
    for name in ("telea", "ns"):
        filled = ev.baseline_method(name)(image, mask)
        assert filled.shape == image.shape and filled.dtype == np.uint8
        np.testing.assert_array_equal(filled[mask == 0], image[mask == 0])
        assert metrics.psnr(filled, image, mask) > 20
    with pytest.raises(pairing.EvaluationError, match="unknown baseline"):
        ev.baseline_method("patchmatch")


def test_duplicate_model_stems_get_a_suffix(dataset, tiny_model_file, tmp_path) -> None:
    images, masks = dataset
    copy = tmp_path / "other" / tiny_model_file.name
    copy.parent.mkdir()
    copy.write_bytes(tiny_model_file.read_bytes())
    out = tmp_path / "out"
    argv = ["--images", str(images), "--masks", str(masks), "--limit", "1"]
    argv += ["--model", str(tiny_model_file), "--model", str(copy), "--out", str(out)]
    assert eval_cli.main(argv) == 0
    assert json.loads((out / "results.json").read_text())["methods"] == ["tiny", "tiny-2"]


# --- real data -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_development_set(tiny_model_file, tmp_path, capsys) -> None:
    images = shared_data("dev/bsds500-val")
    masks = shared_data("masks/nvidia-irregular")
    out = tmp_path / "out"
    argv = ["--images", str(images), "--masks", str(masks), "--model", str(tiny_model_file)]
    code = eval_cli.main([*argv, "--baseline", "telea", "--limit", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    document = json.loads((out / "results.json").read_text())
    assert document["images_evaluated"] == 2 and len(document["pairs"]) == 12
    for name in ("tiny", "telea"):
        assert [document["summary"][name][b]["count"] for b in pairing.BIN_LABELS] == [2] * 6
    assert {pair["hole"] for pair in document["pairs"] if pair["bin"] == "1-10%"} == {
        "00000.png",
        "00001.png",
    }
    assert all(
        scores["changed_outside"] == 0
        for pair in document["pairs"]
        for scores in pair["methods"].values()
    )


def test_sample_montage_inputs_are_shippable_photos_and_masks_in_their_bins(tmp_path) -> None:
    """recipes/sample_montage.py: the model card's pictures, from photos we may ship."""
    import importlib.util

    from glcic.training.pairing import find_masks, ratio_bin

    path = Path(__file__).resolve().parents[1] / "recipes" / "sample_montage.py"
    spec = importlib.util.spec_from_file_location("sample_montage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    images, masks = module.write_inputs(tmp_path)
    assert sorted(p.name for p in images.iterdir()) == [
        "astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg"
    ]  # fmt: skip
    by_bin = find_masks(masks)
    assert sorted(by_bin) == list(range(6))
    for bin_index, paths in by_bin.items():
        assert len(paths) == module.MASKS_PER_BIN
        for mask_path in paths:
            mask = np.asarray(Image.open(mask_path))
            assert ratio_bin(int(np.count_nonzero(mask)), mask.size) == bin_index


# --- detail ratio --------------------------------------------------------------------------------


def test_hole_gradient_measures_texture_inside_the_eroded_hole_only() -> None:
    rng = np.random.default_rng(0)
    textured = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    flat_inside = textured.copy()
    flat_inside[16:48, 16:48] = 128  # a flat fill with a hard seam at the hole's edge
    assert metrics.hole_gradient(textured, mask) > 100
    # Erosion keeps the seam out: a flat fill has no detail whatever surrounds it.
    assert metrics.hole_gradient(flat_inside, mask) == 0
    thin = np.zeros((64, 64), np.uint8)
    thin[10:13, :] = 255  # 3 px: nothing left after a 2 px erosion
    assert math.isnan(metrics.hole_gradient(textured, thin))


def test_hole_checker_answers_a_weave_and_not_a_ramp_or_an_edge() -> None:
    rows, columns = np.mgrid[0:64, 0:64]
    mask = np.zeros((64, 64), np.uint8)
    mask[8:56, 8:56] = 255

    def grey(values: np.ndarray) -> np.ndarray:
        return np.repeat(values.astype(np.uint8)[:, :, None], 3, axis=2)

    ramp = grey(2 * columns + rows)
    edge = grey(np.where(columns < 32, 60, 200))
    checker_2px = grey(np.where((rows + columns) % 2 == 0, 100, 140))
    checker_4px = grey(np.where((rows // 2 + columns // 2) % 2 == 0, 100, 140))
    assert metrics.hole_checker(ramp, mask, 1) == 0
    assert metrics.hole_checker(edge, mask, 1) == 0  # a straight edge cancels
    assert metrics.hole_checker(checker_2px, mask, 1) == pytest.approx(80)  # 2 x (140 - 100)
    assert metrics.hole_checker(checker_4px, mask, 2) == pytest.approx(80)
    # Sobel's central difference cannot see a 2-px checkerboard at all, a 4-px one it can.
    assert metrics.hole_gradient(checker_2px, mask) == 0
    assert metrics.hole_gradient(checker_4px, mask) > 0
    thin = np.zeros((64, 64), np.uint8)
    thin[10:13, :] = 255
    assert math.isnan(metrics.hole_checker(checker_2px, thin, 1))
    # An eroded hole left only in the image's last row has no full window: NaN, no warning.
    bottom = np.zeros((64, 64), np.uint8)
    bottom[-3:, :] = 255
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(metrics.hole_checker(checker_2px, bottom, 1))
    # Windows wider than the erosion would read pixels outside the hole.
    for lag in (0, 3):
        with pytest.raises(ValueError, match="lag must be 1 to 2"):
            metrics.hole_checker(checker_2px, mask, lag)


def test_detail_ratio_is_a_ratio_of_means_over_defined_pairs() -> None:
    fills = np.array([1.0, 3.0, np.nan, 5.0])
    truths = np.array([2.0, 10.0, 4.0, np.nan])
    assert metrics.detail_ratio(fills, truths) == pytest.approx(4.0 / 12.0)
    assert math.isnan(metrics.detail_ratio(np.array([np.nan]), np.array([1.0])))


def test_detail_per_bin_ranks_a_blurry_fill_below_a_textured_one(tmp_path: Path) -> None:
    """On real texture, a smooth fill (Navier-Stokes) scores less detail than one that copies
    texture from elsewhere; results.md, results.json and every bin carry the ratio."""
    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    for index in range(2):
        noise = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        texture = np.kron(noise, np.ones((2, 2, 1), np.uint8))  # 96x128, 2 px grain
        Image.fromarray(texture).save(images / f"img{index}.png")
    masks = write_masks(tmp_path / "masks")

    def copy_texture(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        shifted = np.roll(image, 48, axis=1)  # texture from elsewhere (blanked parts too)
        out = image.copy()
        out[mask > 0] = shifted[mask > 0]
        return out

    methods = {"copy": copy_texture, "ns": ev.baseline_method("ns")}
    result = ev.evaluate(pairing.find_images(images), masks, methods, limit=2)
    for label in ("1-10%", "30-40%", "all"):
        assert result.aggregates["ns"][label].detail < result.aggregates["copy"][label].detail
    assert result.aggregates["ns"]["all"].detail < 0.6
    assert "copy detail" in result.to_markdown() and "ns detail" in result.to_markdown()
    document = json.loads(json.dumps(result.to_json()), parse_constant=pytest.fail)
    assert document["summary"]["copy"]["all"]["detail"] > 0
    assert all(pair["truth_gradient"] > 0 for pair in document["pairs"])


def test_results_json_has_no_nan_for_holes_too_thin_for_detail(tmp_path: Path) -> None:
    images = tmp_path / "images"
    write_images(images, 1)
    masks = tmp_path / "masks"
    masks.mkdir()
    stroke = np.zeros((512, 512), np.uint8)
    stroke[200:210, :] = 255  # 10 px at 512: 2 px once scaled to the photo
    Image.fromarray(stroke).save(masks / "00000.png")
    result = ev.evaluate(pairing.find_images(images), masks, {"ns": ev.baseline_method("ns")})
    text = json.dumps(result.to_json())
    assert "NaN" not in text and json.loads(text)["pairs"][0]["truth_gradient"] is None
