"""Evaluation of completion methods on held-out photos: the API behind `glcic-eval`.

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

The table, the JSON document and the montage are drawn in `glcic.training.eval_report`; the
command line is `glcic.training.eval_cli`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from glcic.blending import composite_soft
from glcic.errors import InputError
from glcic.image_io import read_image
from glcic.model_file import CompletionModel
from glcic.pipeline import complete
from glcic.training.eval_report import (
    ALL_LABEL,
    MONTAGE_EXAMPLES,
    Example,
    ExampleCollector,
    render_json,
    render_markdown,
)
from glcic.training.metrics import detail_ratio, hole_gradient, mean_l1, psnr, ssim
from glcic.training.pairing import (
    BIN_LABELS,
    BOX_PAIRING,
    MASK_PAIRING,
    EvaluationError,
    MaskAssignment,
    box_for,
    find_images,  # noqa: F401 (the documented API imports it from here)
    find_masks,
    load_mask,
    pair_masks,
    ratio_bin,
)

BASELINES = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
BASELINE_RADIUS = 5

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
        """The results table in Markdown (`eval_report.render_markdown`)."""
        return render_markdown(self)

    def to_json(self, arguments: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A JSON-serialisable document: arguments, pairing, per-bin summaries, per-pair rows
        (`eval_report.render_json`)."""
        return render_json(self, arguments)


# --- the evaluation loop -------------------------------------------------------------------------


def check_request(
    method_count: int, masks_dir: Path | None, boxes: bool, limit: int | None
) -> None:
    """Raise `EvaluationError` unless `evaluate` can be asked for this: at least one method, holes
    from exactly one of a masks folder and boxes, a limit of at least 1.

    `evaluate` checks this itself; `glcic-eval` asks it too, before it spends time loading models.
    """
    if method_count < 1:
        raise EvaluationError("no methods to evaluate: give at least one --model or --baseline")
    if boxes and masks_dir is not None:
        raise EvaluationError("give either a masks folder or boxes, not both")
    if not boxes and masks_dir is None:
        raise EvaluationError("give a masks folder (--masks DIR) or use rectangular --boxes")
    if limit is not None and limit < 1:
        raise EvaluationError(f"limit must be at least 1, got {limit}")


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
    check_request(len(methods), masks_dir, boxes, limit)
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
    collector = ExampleCollector(examples, len(chosen))
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
