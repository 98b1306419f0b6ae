"""`glcic-eval`: score models and classical fills on held-out photos, write the results.

glcic-eval --images DIR (--masks DIR | --boxes) [--model MODEL ...] [--baseline telea,ns]
           [--limit N] [--device DEVICE] [--precision auto|float32|bfloat16] [--threads N]
           --out DIR

MODEL is a file, a name in the model folder, or default (`glcic.model_names.resolve_model`).

The rules of an evaluation (which methods, which holes, the limit) are `evaluate`'s own: the
command asks `check_request` and `baseline_method` before it loads any model, so a mistake is
reported at once and in the same words as through the API. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from glcic.atomic import atomic_write_bytes
from glcic.cli_support import (
    add_device_option,
    add_precision_option,
    add_threads_option,
    apply_threads,
    run_command,
)
from glcic.devices import resolve_device
from glcic.model_file import load_model
from glcic.model_names import resolve_model
from glcic.pipeline import BLEND_MODES
from glcic.training.eval_report import PROG, render_montage
from glcic.training.evaluate import (
    BASELINES,
    EvaluationError,
    Method,
    baseline_method,
    check_request,
    evaluate,
    find_images,
    find_masks,
    model_method,
)

PROGRESS_INTERVAL_S = 3.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Score completion models and classical baselines inside holes "
        "(PSNR, SSIM, L1), per hole-ratio bin. See docs/evaluation.md.",
    )
    parser.add_argument("--images", type=Path, required=True, help="folder of photos (recursive)")
    parser.add_argument("--masks", type=Path, help="folder of NVIDIA irregular masks NNNNN.png")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="a model file, a name in the model folder, or default (repeatable)",
    )
    parser.add_argument(
        "--baseline", default="", help=f"comma list of classical fills: {', '.join(BASELINES)}"
    )
    parser.add_argument(
        "--boxes", action="store_true", help="one seeded rectangular hole per image, no masks"
    )
    parser.add_argument("--limit", type=int, help="evaluate only the first N images")
    parser.add_argument(
        "--blend",
        choices=BLEND_MODES,
        default="poisson",
        help="how models' fills are blended in: poisson (default: as users get them) or none "
        "(the network's own pixels, to see what the blend hides)",
    )
    add_device_option(parser, "cpu")
    add_precision_option(parser, "the models run")
    add_threads_option(parser)
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    return parser


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    taken.add(candidate)
    return candidate


def _baseline_names(text: str) -> list[str]:
    """The names in a --baseline list, lower case, each once, in order (not yet checked)."""
    names: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if name and name not in names:
            names.append(name)
    return names


def _run(args: argparse.Namespace) -> int:
    baselines = {name: baseline_method(name) for name in _baseline_names(args.baseline)}
    check_request(len(args.model) + len(baselines), args.masks, args.boxes, args.limit)
    images = find_images(args.images)
    if args.masks is not None:
        find_masks(args.masks)  # fail before loading models
    if args.out.exists() and not args.out.is_dir():
        raise EvaluationError(f"--out {args.out}: exists and is not a folder")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EvaluationError(f"--out {args.out}: cannot be created ({error})") from None
    device = resolve_device(args.device)
    paths = [resolve_model(spec) for spec in args.model]  # every name checked before any load
    apply_threads(args)

    taken: set[str] = set()
    methods: dict[str, Method] = {}
    precision = None
    for path in paths:
        model = load_model(path, device=device, precision=args.precision)
        precision = model.precision
        methods[_unique(path.stem, taken)] = model_method(model, blend=args.blend)
    if precision is not None:
        print(f"{PROG}: models run in {precision.describe()}", file=sys.stderr, flush=True)
    for name, method in baselines.items():
        methods[_unique(name, taken)] = method

    started = time.monotonic()
    last = started

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last < PROGRESS_INTERVAL_S and done < total:
            return
        last = now
        elapsed = now - started
        left = elapsed * (total - done) / done if done else float("nan")
        print(
            f"{PROG}: {done}/{total} pairs, {elapsed:.0f} s elapsed, about {left:.0f} s left",
            file=sys.stderr,
            flush=True,
        )

    def warn(message: str) -> None:
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)

    result = evaluate(
        images,
        args.masks,
        methods,
        boxes=args.boxes,
        limit=args.limit,
        progress=progress,
        warn=warn,
    )
    arguments = {
        "images": str(args.images),
        "masks": None if args.masks is None else str(args.masks),
        "models": [str(path) for path in paths],
        "baseline": list(baselines),
        "boxes": args.boxes,
        "limit": args.limit,
        "blend": args.blend,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "precision": None if precision is None else precision.name,
        "out": str(args.out),
    }
    document = json.dumps(result.to_json(arguments), indent=2) + "\n"
    table = result.to_markdown()
    atomic_write_bytes(args.out / "results.json", document.encode("utf-8"))
    atomic_write_bytes(args.out / "results.md", table.encode("utf-8"))
    montage = render_montage(result)
    if montage is not None:
        atomic_write_bytes(args.out / "montage.png", montage)
    print(
        f"{PROG}: {len(result.pairs)} pairs from {result.images_evaluated} images, "
        f"{len(result.skipped)} skipped; wrote results.json, results.md, montage.png in {args.out}",
        file=sys.stderr,
    )
    print(table, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The `glcic-eval` command; returns the exit status (0, 2 for user errors, 130 on Ctrl-C)."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
