"""How an evaluation is shown: the results table, the JSON document and the montage.

`glcic.training.evaluate` scores the methods; this module only presents what it found, so the
numbers never depend on how they are shown. `ExampleCollector` runs during the evaluation: it
keeps the montage's few examples as small scaled cells while the loop goes on, so that a large
photo is never held longer than its own pair.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glcic import __version__
from glcic.training.pairing import BIN_LABELS

if TYPE_CHECKING:
    from glcic.training.evaluate import BinSummary, EvaluationResult, PairResult

#: The command's name, recorded as the "tool" of every results.json.
PROG = "glcic-eval"

#: The summary row over every pair, after the hole-ratio bins.
ALL_LABEL = "all"

MONTAGE_CELL_HEIGHT = 160
MONTAGE_MAX_CELL_WIDTH = 3 * MONTAGE_CELL_HEIGHT
MONTAGE_EXAMPLES = 6


@dataclass(frozen=True)
class Example:
    """Montage cells, already scaled: input with the hole shown, each method, ground truth."""

    label: str
    cells: tuple[np.ndarray, ...]


# --- the table and the JSON document -------------------------------------------------------------


def render_markdown(result: EvaluationResult) -> str:
    """A table: rows = bins then "all"; per method PSNR / SSIM / L1 / detail, best per row in
    bold (detail: closest to the photos' own 1.0)."""
    labels = [label for label in (*BIN_LABELS, ALL_LABEL) if _row(result, label)]
    header = ["holes", "pairs", "mean hole"]
    for name in result.methods:
        escaped = name.replace("|", "\\|")
        header += [f"{escaped} PSNR", f"{escaped} SSIM", f"{escaped} L1", f"{escaped} detail"]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for label in labels:
        row = _row(result, label)
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
        for name in result.methods:
            for column, text in enumerate(shown[name]):
                value = float(text) if column < 3 else abs(1 - float(text))
                bold = len(result.methods) > 1 and value == best[column]
                cells.append(f"**{text}**" if bold else text)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"Inside the hole only; pairing `{result.pairing}`. PSNR (dB) and SSIM: higher is "
        "better; L1 (mean absolute error, 0-1): lower is better; detail: mean Sobel gradient "
        "of the fill inside the hole (eroded 2 px) over the real photo's, 1 = as textured as "
        "the photo. Best per row in bold."
    )
    return "\n".join(lines) + "\n"


def _row(result: EvaluationResult, label: str) -> dict[str, BinSummary]:
    return {
        name: result.aggregates[name][label]
        for name in result.methods
        if label in result.aggregates[name]
    }


def render_json(
    result: EvaluationResult, arguments: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A JSON-serialisable document: arguments, pairing, per-bin summaries, per-pair rows."""
    return {
        "tool": PROG,
        "glcic_version": __version__,
        "arguments": dict(arguments or {}),
        "pairing": result.pairing,
        "bins": list(BIN_LABELS),
        "methods": list(result.methods),
        "images_evaluated": result.images_evaluated,
        "pairs_evaluated": len(result.pairs),
        "summary": {
            name: {label: _json_numbers(vars(summary)) for label, summary in rows.items()}
            for name, rows in result.aggregates.items()
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
                    for name in result.methods
                },
            }
            for pair in result.pairs
        ],
        "skipped_count": len(result.skipped),
        "skipped": [vars(entry) for entry in result.skipped],
    }


def _json_number(value: float) -> float | None:
    """JSON has no NaN: an undefined value (detail of a hole too thin to hold any) is null."""
    return None if isinstance(value, float) and value != value else value


def _json_numbers(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _json_number(value) for key, value in values.items()}


# --- montage -------------------------------------------------------------------------------------


class ExampleCollector:
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
