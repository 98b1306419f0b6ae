"""Evaluation of completion methods on held-out photos: the `glcic-eval` command and its API.

A number is only comparable with another if both came from the same photos, the same holes and the
same metric code, so the pairing of photos with holes is fixed here and named in every result.

Pairing rule ``nvidia-irregular-by-bin-v1`` (``--masks``): the images are the files under the
images folder, searched recursively, whose extension is .jpg, .jpeg, .png, .bmp, .webp, .tif or
.tiff (any case), sorted by relative path (folder by folder). The masks are the files named
``NNNNN.png`` (five digits) directly in the masks folder; mask number N belongs to hole-ratio bin
N // 2000 (0: 1-10 %, 1: 10-20 %, ... 5: 50-60 %; other numbers are ignored), and each bin's masks
are sorted by number. Image i (0-based) is paired with the (i mod n_b)-th mask of every bin b
that has masks, so each image is evaluated once per bin. A mask is resized to its image's size
(nearest neighbour) and thresholded: > 127 is hole (255), the rest is kept (0). The bin is the
file's; the hole ratio actually reached at the image's size is reported beside it.

Pairing rule ``seeded-boxes-v1`` (``--boxes``): one rectangular hole per image, its sides drawn
from [64, 128] and its position uniformly, by a generator seeded with (2017, image index). Sides
are clipped to half the image's sides, so that a small image keeps known context around the hole.
Its bin is floor(10 x hole ratio), clamped to 0..5 (a ratio under 1 % counts as 1-10 %).

Before a method sees an image, the pixels under the hole are set to 0, so no method can read the
ground truth. Metrics are computed inside the hole only (see `psnr`, `ssim`, `mean_l1`).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glcic import __version__
from glcic.atomic import atomic_write_bytes
from glcic.blending import composite_soft
from glcic.errors import GlcicError, InputError
from glcic.image_io import read_image
from glcic.model_file import CompletionModel, load_model
from glcic.pipeline import complete
from glcic.precision import PRECISIONS
from glcic.training.metrics import detail_ratio, hole_gradient, mean_l1, psnr, ssim
from glcic.training.pairing import (
    BIN_LABELS,
    BOX_PAIRING,
    MASK_PAIRING,
    EvaluationError,
    MaskAssignment,
    box_for,
    find_images,
    find_masks,
    load_mask,
    pair_masks,
    ratio_bin,
)

PROG = "glcic-eval"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

ALL_LABEL = "all"


BASELINES = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
BASELINE_RADIUS = 5

MONTAGE_CELL_HEIGHT = 160
MONTAGE_MAX_CELL_WIDTH = 3 * MONTAGE_CELL_HEIGHT
MONTAGE_EXAMPLES = 6
PROGRESS_INTERVAL_S = 3.0


#: (image with the hole blanked, HxWx3 uint8; mask, HxW uint8 0/255) -> filled HxWx3 uint8.
Method = Callable[[np.ndarray, np.ndarray], np.ndarray]
ProgressCallback = Callable[[int, int], None]
WarnCallback = Callable[[str], None]


# --- methods -------------------------------------------------------------------------------------


def model_method(model: CompletionModel, blend: str = "poisson") -> Method:
    """A method that fills through the product's own pipeline, exactly as users get it."""

    def run(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return complete(image, mask, model, blend=blend)

    return run


def baseline_method(name: str) -> Method:
    """OpenCV's classical fills (radius 5), composited like the pipeline composites its fill."""
    if name not in BASELINES:
        raise EvaluationError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
    flag = BASELINES[name]

    def run(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        filled = cv2.cvtColor(cv2.inpaint(bgr, mask, BASELINE_RADIUS, flag), cv2.COLOR_BGR2RGB)
        return composite_soft(image, filled, mask)

    return run


# --- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scores:
    psnr: float
    ssim: float
    l1: float
    gradient: float  # `hole_gradient` of the method's fill (NaN for holes too thin)


@dataclass(frozen=True)
class PairResult:
    """One image with one hole, scored for every method."""

    image: str
    image_index: int
    hole: str  # the mask's file name, or "box x,y,w,h"
    bin: int
    hole_ratio: float
    size: tuple[int, int]  # width, height
    truth_gradient: float  # `hole_gradient` of the real photo, the detail ratio's reference
    scores: dict[str, Scores]
    seconds: dict[str, float]
    #: Pixels outside the hole that a method changed; anything but 0 is a bug in that method.
    changed_outside: dict[str, int]


@dataclass(frozen=True)
class Skipped:
    path: str
    hole: str | None  # None when the image itself could not be used
    reason: str


@dataclass(frozen=True)
class BinSummary:
    count: int
    hole_ratio: float
    psnr: float
    ssim: float
    l1: float
    detail: float  # `detail_ratio` over the bin's pairs
    seconds: float


@dataclass(frozen=True)
class Example:
    """Montage cells, already scaled: input with the hole shown, each method, ground truth."""

    label: str
    cells: tuple[np.ndarray, ...]


def summarise(pairs: Sequence[PairResult], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method: a `BinSummary` per bin label that has pairs (in bin order), then "all"."""
    summary: dict[str, dict[str, Any]] = {}
    for name in methods:
        rows: dict[str, BinSummary] = {}
        for bin_index, label in enumerate(BIN_LABELS):
            chosen = [pair for pair in pairs if pair.bin == bin_index]
            if chosen:
                rows[label] = _summary_of(chosen, name)
        if pairs:
            rows[ALL_LABEL] = _summary_of(pairs, name)
        summary[name] = rows
    return summary


def _summary_of(pairs: Sequence[PairResult], name: str) -> BinSummary:
    return BinSummary(
        count=len(pairs),
        hole_ratio=float(np.mean([p.hole_ratio for p in pairs])),
        psnr=float(np.mean([p.scores[name].psnr for p in pairs])),
        ssim=float(np.mean([p.scores[name].ssim for p in pairs])),
        l1=float(np.mean([p.scores[name].l1 for p in pairs])),
        detail=detail_ratio(
            np.array([p.scores[name].gradient for p in pairs]),
            np.array([p.truth_gradient for p in pairs]),
        ),
        seconds=float(np.mean([p.seconds[name] for p in pairs])),
    )


@dataclass
class EvaluationResult:
    """Everything one evaluation produced; `aggregates` is derived from `pairs`."""

    methods: list[str]
    pairing: str
    pairs: list[PairResult]
    skipped: list[Skipped]
    images_evaluated: int
    examples: list[Example] = field(default_factory=list, repr=False, compare=False)
    aggregates: dict[str, dict[str, BinSummary]] = field(init=False)

    def __post_init__(self) -> None:
        self.aggregates = summarise(self.pairs, self.methods)

    def to_markdown(self) -> str:
        """A table: rows = bins then "all"; per method PSNR / SSIM / L1 / detail, best per row in
        bold (detail: closest to the photos' own 1.0)."""
        labels = [label for label in (*BIN_LABELS, ALL_LABEL) if self._row(label)]
        header = ["holes", "pairs", "mean hole"]
        for name in self.methods:
            escaped = name.replace("|", "\\|")
            header += [f"{escaped} PSNR", f"{escaped} SSIM", f"{escaped} L1", f"{escaped} detail"]
        lines = [
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        ]
        for label in labels:
            row = self._row(label)
            first = next(iter(row.values()))
            cells = [f"**{label}**" if label == ALL_LABEL else label, str(first.count)]
            cells.append(f"{100 * first.hole_ratio:.1f}%")
            shown = {
                name: (f"{s.psnr:.2f}", f"{s.ssim:.4f}", f"{s.l1:.4f}", f"{s.detail:.2f}")
                for name, s in row.items()
            }
            best = [
                max(float(v[0]) for v in shown.values()),
                max(float(v[1]) for v in shown.values()),
                min(float(v[2]) for v in shown.values()),
                min((abs(1 - float(v[3])) for v in shown.values()), default=float("nan")),
            ]
            for name in self.methods:
                for column, text in enumerate(shown[name]):
                    value = float(text) if column < 3 else abs(1 - float(text))
                    bold = len(self.methods) > 1 and value == best[column]
                    cells.append(f"**{text}**" if bold else text)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines.append(
            f"Inside the hole only; pairing `{self.pairing}`. PSNR (dB) and SSIM: higher is "
            "better; L1 (mean absolute error, 0-1): lower is better; detail: mean Sobel gradient "
            "of the fill inside the hole (eroded 2 px) over the real photo's, 1 = as textured as "
            "the photo. Best per row in bold."
        )
        return "\n".join(lines) + "\n"

    def _row(self, label: str) -> dict[str, BinSummary]:
        return {
            name: self.aggregates[name][label]
            for name in self.methods
            if label in self.aggregates[name]
        }

    def to_json(self, arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A JSON-serialisable document: arguments, pairing, per-bin summaries, per-pair rows."""
        return {
            "tool": PROG,
            "glcic_version": __version__,
            "arguments": dict(arguments or {}),
            "pairing": self.pairing,
            "bins": list(BIN_LABELS),
            "methods": list(self.methods),
            "images_evaluated": self.images_evaluated,
            "pairs_evaluated": len(self.pairs),
            "summary": {
                name: {label: _json_numbers(vars(summary)) for label, summary in rows.items()}
                for name, rows in self.aggregates.items()
            },
            "pairs": [
                {
                    "image": pair.image,
                    "image_index": pair.image_index,
                    "hole": pair.hole,
                    "bin": BIN_LABELS[pair.bin],
                    "hole_ratio": pair.hole_ratio,
                    "size": list(pair.size),
                    "truth_gradient": _json_number(pair.truth_gradient),
                    "methods": {
                        name: {
                            **_json_numbers(vars(pair.scores[name])),
                            "seconds": pair.seconds[name],
                            "changed_outside": pair.changed_outside[name],
                        }
                        for name in self.methods
                    },
                }
                for pair in self.pairs
            ],
            "skipped_count": len(self.skipped),
            "skipped": [vars(entry) for entry in self.skipped],
        }


def _json_number(value: float) -> float | None:
    """JSON has no NaN: an undefined value (detail of a hole too thin to hold any) is null."""
    return None if isinstance(value, float) and value != value else value


def _json_numbers(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _json_number(value) for key, value in values.items()}


# --- the evaluation loop -------------------------------------------------------------------------


def evaluate(
    images: Sequence[Path],
    masks_dir: Path | None,
    methods: Mapping[str, Method],
    boxes: bool = False,
    limit: int | None = None,
    *,
    progress: ProgressCallback | None = None,
    warn: WarnCallback | None = None,
    examples: int = MONTAGE_EXAMPLES,
) -> EvaluationResult:
    """Score every method on every (image, hole) pair of the pairing rule (module docstring).

    `images` are used in the order given (`find_images` gives the documented one). Unreadable
    images, unreadable masks, holes empty at an image's size, and pairs a method rejects with an
    `InputError` are skipped (reported through `warn`) so every method is scored on the same
    pairs. Raises `EvaluationError` when nothing could be evaluated.
    """
    if not methods:
        raise EvaluationError("no methods to evaluate: give at least one --model or --baseline")
    if boxes and masks_dir is not None:
        raise EvaluationError("give either a masks folder or boxes, not both")
    if not boxes and masks_dir is None:
        raise EvaluationError("give a masks folder (--masks DIR) or use rectangular --boxes")
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be at least 1, got {limit}")
    chosen = list(images)[:limit] if limit is not None else list(images)
    if not chosen:
        raise EvaluationError("no images to evaluate")
    masks_by_bin = find_masks(masks_dir) if masks_dir is not None else {}
    assignments: dict[int, list[MaskAssignment]] = {}
    for assignment in pair_masks(len(chosen), masks_by_bin):
        assignments.setdefault(assignment.image_index, []).append(assignment)
    per_image = 1 if boxes else len(masks_by_bin)
    total = len(chosen) * per_image
    names = list(methods)
    notify = progress or (lambda done, total: None)
    say = warn or (lambda message: None)
    pairs: list[PairResult] = []
    skipped: list[Skipped] = []
    collector = _ExampleCollector(examples, len(chosen))
    evaluated_images = 0
    done = 0
    for index, path in enumerate(chosen):
        try:
            truth = np.ascontiguousarray(read_image(path)[..., :3])
        except InputError as error:
            skipped.append(Skipped(str(path), None, str(error)))
            say(f"{error}; skipped")
            done += per_image
            notify(done, total)
            continue
        height, width = truth.shape[:2]
        holes: list[tuple[str, int, Path | np.ndarray]]
        if boxes:
            x, y, box_w, box_h = box_for(index, height, width)
            box_mask = np.zeros((height, width), np.uint8)
            box_mask[y : y + box_h, x : x + box_w] = 255
            bin_index = ratio_bin(box_w * box_h, height * width)
            holes = [(f"box {x},{y},{box_w},{box_h}", bin_index, box_mask)]
        else:
            holes = [(a.mask.name, a.bin, a.mask) for a in assignments.get(index, [])]
        any_pair = False
        for hole_name, bin_index, source in holes:
            try:
                mask = (
                    source if isinstance(source, np.ndarray) else load_mask(source, height, width)
                )
                pair, outputs = _evaluate_pair(
                    path, index, truth, hole_name, bin_index, mask, methods
                )
            except InputError as error:
                skipped.append(Skipped(str(path), hole_name, str(error)))
                say(f"{path} with {hole_name}: {error}; skipped")
            else:
                pairs.append(pair)
                any_pair = True
                collector.offer(pair, truth, mask, [outputs[name] for name in names])
            done += 1
            notify(done, total)
        evaluated_images += any_pair
    if not pairs:
        raise EvaluationError(
            f"no image could be evaluated ({len(skipped)} skipped; see the warnings above)"
        )
    return EvaluationResult(
        methods=names,
        pairing=BOX_PAIRING if boxes else MASK_PAIRING,
        pairs=pairs,
        skipped=skipped,
        images_evaluated=evaluated_images,
        examples=collector.chosen(),
    )


def _evaluate_pair(
    path: Path,
    index: int,
    truth: np.ndarray,
    hole_name: str,
    bin_index: int,
    mask: np.ndarray,
    methods: Mapping[str, Method],
) -> tuple[PairResult, dict[str, np.ndarray]]:
    hole = mask > 0
    hole_pixels = int(np.count_nonzero(hole))
    if hole_pixels == 0:
        raise InputError("the hole is empty at this image's size")
    given = truth.copy()
    given[hole] = 0
    given.flags.writeable = False
    mask.flags.writeable = False
    scores: dict[str, Scores] = {}
    seconds: dict[str, float] = {}
    changed: dict[str, int] = {}
    outputs: dict[str, np.ndarray] = {}
    for name, method in methods.items():
        started = time.perf_counter()
        try:
            output = method(given, mask)
        except InputError as error:
            raise InputError(f"method {name}: {error}") from None
        seconds[name] = time.perf_counter() - started
        if not (
            isinstance(output, np.ndarray)
            and output.dtype == np.uint8
            and output.shape == truth.shape
        ):
            raise TypeError(f"method {name} must return {truth.shape} uint8 RGB")
        scores[name] = Scores(
            psnr(output, truth, hole),
            ssim(output, truth, hole),
            mean_l1(output, truth, hole),
            hole_gradient(output, hole),
        )
        changed[name] = int(np.count_nonzero(np.any(output != truth, axis=2) & ~hole))
        outputs[name] = output
    pair = PairResult(
        image=str(path),
        image_index=index,
        hole=hole_name,
        bin=bin_index,
        hole_ratio=hole_pixels / hole.size,
        size=(truth.shape[1], truth.shape[0]),
        truth_gradient=hole_gradient(truth, hole),
        scores=scores,
        seconds=seconds,
        changed_outside=changed,
    )
    return pair, outputs


class _ExampleCollector:
    """Keeps a few pairs for the montage, as scaled cells only (large photos are never held).

    One per bin, preferring image (bin mod image count) so the rows show different photos, then
    further pairs in order when there are fewer bins than wanted examples.
    """

    def __init__(self, wanted: int, image_count: int) -> None:
        self.wanted = wanted
        self.image_count = max(1, image_count)
        self.per_bin: dict[int, tuple[bool, Example]] = {}
        self.others: list[Example] = []

    def offer(
        self, pair: PairResult, truth: np.ndarray, mask: np.ndarray, outputs: list[np.ndarray]
    ) -> None:
        if self.wanted <= 0:
            return
        preferred = pair.image_index == pair.bin % self.image_count
        held = self.per_bin.get(pair.bin)
        if held is None or (preferred and not held[0]):
            self.per_bin[pair.bin] = (preferred, _example(pair, truth, mask, outputs))
        elif len(self.others) < self.wanted:
            self.others.append(_example(pair, truth, mask, outputs))

    def chosen(self) -> list[Example]:
        firsts = [self.per_bin[b][1] for b in sorted(self.per_bin)]
        return (firsts + self.others)[: self.wanted]


def _example(
    pair: PairResult, truth: np.ndarray, mask: np.ndarray, outputs: list[np.ndarray]
) -> Example:
    shown = truth.copy()
    shown[mask > 0] = 255
    height, width = truth.shape[:2]
    scale = min(MONTAGE_CELL_HEIGHT / height, MONTAGE_MAX_CELL_WIDTH / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    cells = tuple(
        cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in (shown, *outputs, truth)
    )
    label = f"{BIN_LABELS[pair.bin]}: {100 * pair.hole_ratio:.0f}%\n{Path(pair.image).stem}"
    return Example(label, cells)


# --- montage -------------------------------------------------------------------------------------

_HEADER = 16
_GAP = 4
_BACKGROUND = (40, 40, 40)


def render_montage(result: EvaluationResult) -> bytes | None:
    """PNG bytes of the examples: a row each; columns input (hole white), methods, ground truth."""
    if not result.examples:
        return None
    titles = ["input", *result.methods, "ground truth"]
    cell_w = max(cell.shape[1] for example in result.examples for cell in example.cells)
    columns = len(titles)
    width = columns * cell_w + (columns + 1) * _GAP
    height = _HEADER + len(result.examples) * (MONTAGE_CELL_HEIGHT + _GAP) + _GAP
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    max_chars = max(4, cell_w // 6)
    for column, title in enumerate(titles):
        draw.text((_GAP + column * (cell_w + _GAP), 2), title[:max_chars], fill="white", font=font)
    for row, example in enumerate(result.examples):
        top = _HEADER + _GAP + row * (MONTAGE_CELL_HEIGHT + _GAP)
        cell_h, cell_w_here = example.cells[0].shape[:2]
        left = _GAP + (cell_w - cell_w_here) // 2
        down = (MONTAGE_CELL_HEIGHT - cell_h) // 2
        for column, cell in enumerate(example.cells):
            canvas.paste(Image.fromarray(cell), (left + column * (cell_w + _GAP), top + down))
        # The label sits on the input image, where the hole already hides the content.
        label = "\n".join(line[: max(4, cell_w_here // 6)] for line in example.label.splitlines())
        box = draw.multiline_textbbox((left + 2, top + down + 2), label, font=font)
        draw.rectangle(box, fill=(0, 0, 0))
        draw.multiline_text((left + 2, top + down + 2), label, fill="white", font=font)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


# --- command line --------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Score completion models and classical baselines inside holes "
        "(PSNR, SSIM, L1), per hole-ratio bin. See docs/evaluation.md.",
    )
    parser.add_argument("--images", type=Path, required=True, help="folder of photos (recursive)")
    parser.add_argument("--masks", type=Path, help="folder of NVIDIA irregular masks NNNNN.png")
    parser.add_argument(
        "--model", type=Path, action="append", default=[], help="model file (repeatable)"
    )
    parser.add_argument(
        "--baseline", default="", help=f"comma list of classical fills: {', '.join(BASELINES)}"
    )
    parser.add_argument(
        "--boxes", action="store_true", help="one seeded rectangular hole per image, no masks"
    )
    parser.add_argument("--limit", type=_positive_int, help="evaluate only the first N images")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="what the models run in: float32, bfloat16, or auto (fast and validated; default)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    return parser


def _unique(name: str, taken: set[str]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}-{number}", number + 1
    taken.add(candidate)
    return candidate


def _baseline_names(text: str) -> list[str]:
    names: list[str] = []
    for part in text.split(","):
        name = part.strip().lower()
        if not name:
            continue
        if name not in BASELINES:
            raise EvaluationError(
                f"--baseline: unknown baseline {part.strip()!r}; choose from {', '.join(BASELINES)}"
            )
        if name not in names:
            names.append(name)
    return names


def _run(args: argparse.Namespace) -> int:
    baselines = _baseline_names(args.baseline)
    if not args.model and not baselines:
        raise EvaluationError("no methods to evaluate: give at least one --model or --baseline")
    if args.boxes and args.masks is not None:
        raise EvaluationError("--masks and --boxes cannot be used together")
    if not args.boxes and args.masks is None:
        raise EvaluationError("give --masks DIR (NVIDIA irregular masks) or --boxes")
    images = find_images(args.images)
    if args.masks is not None:
        find_masks(args.masks)  # fail before loading models
    if args.out.exists() and not args.out.is_dir():
        raise EvaluationError(f"--out {args.out}: exists and is not a folder")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise EvaluationError(f"--out {args.out}: cannot be created ({error})") from None
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise EvaluationError("--device cuda: no CUDA device is available here; use cpu")

    taken: set[str] = set()
    methods: dict[str, Method] = {}
    precision = None
    for path in args.model:
        model = load_model(path, device=args.device, precision=args.precision)
        precision = model.precision
        methods[_unique(path.stem, taken)] = model_method(model)
    if precision is not None:
        print(f"{PROG}: models run in {precision.describe()}", file=sys.stderr, flush=True)
    for name in baselines:
        methods[_unique(name, taken)] = baseline_method(name)

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
        "models": [str(path) for path in args.model],
        "baseline": baselines,
        "boxes": args.boxes,
        "limit": args.limit,
        "device": args.device,
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
    try:
        return _run(args)
    except GlcicError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
