"""Does adapting to the image pay? Hole metrics of a model against itself adapted, per budget.

For each dev photo and each of its `glcic-eval` masks in the chosen bins, the photo is completed
by the model as it is and after `glcic.adapt` on the photo with the hole blanked, at several
budgets along one adaptation run. Photos are split into the texture-rich half (the highest mean
Sobel gradient of the whole photo, over all the dev photos) and the rest, as the issue asks.

Budgets are seconds of one CPU, turned into steps by a rate measured on this machine in CPU time
of one thread (`--steps-per-second`, or a probe at start), so the result does not depend on what
else the machine runs while the experiment does. Rows go to a JSON-lines file as they come, so an
interrupted run continues where it stopped (`--out` again), and several shards (`--shard i/n`)
can run side by side into their own files, summarised together with `--summarise`.

    python benchmarks/adapt_experiment.py --out ~/exp/adapt/run.jsonl --photos 24 --shard 0/2
    python benchmarks/adapt_experiment.py --summarise ~/exp/adapt/run*.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from glcic import complete, load_model, resolve_model
from glcic.adaptation import AdaptSettings, adapt
from glcic.image_io import read_image
from glcic.training.metrics import hole_gradient, mean_l1, psnr
from glcic.training.pairing import BIN_LABELS, find_images, find_masks, load_mask, pair_masks

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def gradient_energy(image: np.ndarray) -> float:
    """Mean Sobel gradient magnitude of the photo's luma: how much texture it holds."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    dx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3)
    dy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3)
    return float(cv2.magnitude(dx, dy).mean())


def probe_rate(model, image, mask, settings: AdaptSettings, steps: int = 15) -> float:
    """Adaptation steps per CPU-second of this process (one thread), after a short warm-up.

    CPU time, not wall time: a busy machine slows the wall clock, not the work a step is.
    """
    adapt(model, image, mask, steps=2, seconds=None, settings=settings)
    started = time.process_time()
    adapt(model, image, mask, steps=steps, seconds=None, settings=settings)
    return steps / (time.process_time() - started)


def scores(result: np.ndarray, truth: np.ndarray, hole: np.ndarray) -> dict[str, float]:
    return {
        "l1": mean_l1(result, truth, hole),
        "psnr": psnr(result, truth, hole),
        "gradient": hole_gradient(result, hole),
    }


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    model = load_model(resolve_model(args.model))
    settings = AdaptSettings(
        learning_rate=args.lr,
        batch_size=args.batch,
        crop_size=args.crop,
        trainable=args.trainable,
    )
    paths = find_images(args.images)
    photos = [np.ascontiguousarray(read_image(p)[..., :3]) for p in paths]
    energy = np.array([gradient_energy(p) for p in photos])
    rich = energy >= np.median(energy)
    masks_by_bin = find_masks(args.masks)
    candidates = [
        i for i in range(len(paths)) if args.half == "all" or rich[i] == (args.half == "rich")
    ]
    spaced = np.linspace(0, len(candidates) - 1, min(args.photos, len(candidates))).round()
    chosen = {candidates[int(i)] for i in spaced}
    pairs = [
        a
        for a in pair_masks(len(paths), masks_by_bin)
        if a.image_index in chosen and a.bin in args.bins
    ]
    index, count = (int(v) for v in args.shard.split("/"))
    pairs = pairs[index::count]
    done = set()
    if args.out.exists():
        for line in args.out.read_text().splitlines():
            row = json.loads(line)
            done.add((row["image"], row["mask"]))
    rate = args.steps_per_second
    if rate is None:
        first = pairs[0]
        truth = photos[first.image_index]
        mask = load_mask(first.mask, *truth.shape[:2])
        rate = probe_rate(model, truth, mask, settings)
    budgets = {seconds: round(seconds * rate) for seconds in args.budgets}
    print(f"rate {rate:.3f} steps/s; steps per budget {budgets}; {len(pairs)} pairs", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for number, assignment in enumerate(pairs):
        path = paths[assignment.image_index]
        key = (path.name, assignment.mask.name)
        if key in done:
            continue
        truth = photos[assignment.image_index]
        mask = load_mask(assignment.mask, *truth.shape[:2])
        hole = mask > 0
        given = truth.copy()
        given[hole] = 0
        by_step: dict[int, dict[str, float]] = {}
        wanted = sorted(set(budgets.values()))
        if 0 in wanted:
            by_step[0] = scores(complete(given, mask, model), truth, hole)

        def look(step, adapted, mask=mask, given=given, truth=truth, hole=hole, wanted=wanted):
            if step in wanted:
                by_step[step] = scores(complete(given, mask, adapted), truth, hole)  # noqa: B023

        started = time.perf_counter()
        adapt(
            model, given, mask, steps=max(wanted), seconds=None, seed=args.seed,
            settings=settings, after_step=look,
        )  # fmt: skip
        row = {
            "image": path.name,
            "mask": assignment.mask.name,
            "bin": assignment.bin,
            "rich": bool(rich[assignment.image_index]),
            "truth_gradient": hole_gradient(truth, hole),
            "budgets": {str(s): by_step[budgets[s]] for s in args.budgets},
            "settings": vars(settings),
            "rate": rate,
        }
        with args.out.open("a") as out:
            out.write(json.dumps(row) + "\n")
        l1 = [round(row["budgets"][str(s)]["l1"], 4) for s in args.budgets]
        print(
            f"[{number + 1}/{len(pairs)}] {key} bin {BIN_LABELS[assignment.bin]} "
            f"rich {row['rich']} L1 {l1} ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )


def summarise(files: list[Path]) -> str:
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines() if line]
    if not rows:
        return "no rows"
    budgets = list(rows[0]["budgets"])
    lines = [
        f"{len(rows)} pairs; settings {rows[0]['settings']}; rate {rows[0]['rate']:.3f} steps/s",
        "",
        "| photos | bin | pairs | "
        + " | ".join(f"L1 {b} s" for b in budgets)
        + " | "
        + " | ".join(f"ΔL1 {b} s" for b in budgets[1:])
        + " | "
        + " | ".join(f"PSNR {b} s" for b in budgets)
        + " | "
        + " | ".join(f"detail {b} s" for b in budgets)
        + " |",
        "|---" * (3 + 4 * len(budgets) - 1) + "|",
    ]
    for half in (True, False):
        for bin_index, label in enumerate(BIN_LABELS):
            chosen = [r for r in rows if r["rich"] == half and r["bin"] == bin_index]
            if not chosen:
                continue
            l1 = [np.mean([r["budgets"][b]["l1"] for r in chosen]) for b in budgets]
            ps = [np.mean([r["budgets"][b]["psnr"] for r in chosen]) for b in budgets]
            truth = np.array([r["truth_gradient"] for r in chosen])
            detail = []
            for b in budgets:
                fill = np.array([r["budgets"][b]["gradient"] for r in chosen])
                ok = np.isfinite(fill) & np.isfinite(truth)
                detail.append(fill[ok].sum() / truth[ok].sum() if ok.any() else float("nan"))
            change = [100 * (v / l1[0] - 1) for v in l1[1:]]
            lines.append(
                f"| {'texture-rich' if half else 'rest'} | {label} | {len(chosen)} | "
                + " | ".join(f"{v:.4f}" for v in l1)
                + " | "
                + " | ".join(f"{v:+.1f} %" for v in change)
                + " | "
                + " | ".join(f"{v:.2f}" for v in ps)
                + " | "
                + " | ".join(f"{v:.2f}" for v in detail)
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DATA / "dev" / "bsds500-val")
    parser.add_argument("--masks", type=Path, default=DATA / "masks" / "nvidia-irregular")
    parser.add_argument("--model", default="default")
    parser.add_argument("--photos", type=int, default=100, help="photos used, evenly spaced")
    parser.add_argument("--half", choices=("all", "rich", "rest"), default="all")
    parser.add_argument("--bins", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--budgets", type=float, nargs="+", default=[0, 10, 30, 60])
    parser.add_argument("--steps-per-second", type=float)
    parser.add_argument("--lr", type=float, default=AdaptSettings.learning_rate)
    parser.add_argument("--batch", type=int, default=AdaptSettings.batch_size)
    parser.add_argument("--crop", type=int)
    parser.add_argument("--trainable", default=AdaptSettings.trainable)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard", default="0/1")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--summarise", type=Path, nargs="+")
    args = parser.parse_args()
    if args.summarise:
        print(summarise(args.summarise))
        return
    if args.out is None:
        parser.error("--out is required")
    print(f"processor: {platform.processor() or platform.machine()}; pid {os.getpid()}")
    run(args)


if __name__ == "__main__":
    sys.exit(main())
