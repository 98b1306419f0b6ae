"""RUN_DIR/plot.png: the losses and held-out scores of a run against its steps, at a glance.

Drawn with Pillow, which the package already needs, rather than a plotting library that would
be a large dependency for one picture of a few lines. One panel per quantity that has values:
the completion loss (hole MSE), the two adversarial losses, and the held-out hole L1 and PSNR
of `--eval-every`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from glcic.atomic import atomic_write_bytes
from glcic.training.live_eval import read_scores
from glcic.training.reporting import csv_rows
from glcic.training.samples import encode_png

#: (title, [(file, column, colour)]) per panel.
PANELS = (
    ("completion loss: hole MSE", [("metrics", "loss_mse", (80, 160, 255))]),
    (
        "adversarial: discriminator (orange), completion (green)",
        [("metrics", "loss_d", (255, 160, 60)), ("metrics", "loss_adv", (90, 200, 90))],
    ),
    ("held-out photos: hole L1 (lower is better)", [("eval", "l1", (255, 110, 110))]),
    ("held-out photos: hole PSNR, dB (higher is better)", [("eval", "psnr", (200, 130, 255))]),
)
PANEL_SIZE = (460, 200)
_MARGIN = (56, 24, 12, 24)  # left, top, right, bottom
_BACKGROUND = (255, 255, 255)
_AXIS = (90, 90, 90)


def _series(rows: list[dict[str, str]], column: str) -> tuple[np.ndarray, np.ndarray]:
    points = []
    for row in rows:
        try:
            step, value = float(row["step"]), float(row[column])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(value):
            points.append((step, value))
    array = np.array(points, dtype=np.float64).reshape(-1, 2)
    return array[:, 0], array[:, 1]


def render(run_dir: Path) -> np.ndarray | None:
    """The plot as an HxWx3 uint8 image, or None while there is nothing to draw."""
    sources = {"metrics": csv_rows(run_dir / "metrics.csv"), "eval": read_scores(run_dir)}
    panels = []
    for title, lines in PANELS:
        series = [(_series(sources[src], column), colour) for src, column, colour in lines]
        series = [(xy, colour) for xy, colour in series if len(xy[0])]
        if series:
            panels.append(_panel(title, series))
    if not panels:
        return None
    columns = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / columns)
    canvas = Image.new("RGB", (columns * PANEL_SIZE[0], rows * PANEL_SIZE[1]), _BACKGROUND)
    for index, panel in enumerate(panels):
        canvas.paste(panel, ((index % columns) * PANEL_SIZE[0], (index // columns) * PANEL_SIZE[1]))
    return np.asarray(canvas)


def _panel(title: str, series: list[tuple[tuple[np.ndarray, np.ndarray], tuple]]) -> Image.Image:
    image = Image.new("RGB", PANEL_SIZE, _BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    left, top, right, bottom = _MARGIN
    x0, y0, x1, y1 = left, top, PANEL_SIZE[0] - right, PANEL_SIZE[1] - bottom
    steps = np.concatenate([xy[0] for xy, _ in series])
    values = np.concatenate([xy[1] for xy, _ in series])
    low_x, high_x = steps.min(), max(steps.max(), steps.min() + 1)
    low_y, high_y = values.min(), values.max()
    if high_y - low_y < 1e-12:
        low_y, high_y = low_y - 0.5 * abs(low_y or 1), high_y + 0.5 * abs(high_y or 1)
    draw.text((left, 4), title, fill=_AXIS, font=font)
    draw.rectangle((x0, y0, x1, y1), outline=_AXIS)
    draw.text((4, y0), f"{high_y:.4g}", fill=_AXIS, font=font)
    draw.text((4, y1 - 10), f"{low_y:.4g}", fill=_AXIS, font=font)
    draw.text((x0, y1 + 4), f"step {low_x:,.0f}", fill=_AXIS, font=font)
    last = f"{high_x:,.0f}"
    draw.text((x1 - 6 * len(last), y1 + 4), last, fill=_AXIS, font=font)
    for (xs, ys), colour in series:
        px = x0 + (xs - low_x) / (high_x - low_x) * (x1 - x0)
        py = y1 - (ys - low_y) / (high_y - low_y) * (y1 - y0)
        points = list(zip(px.tolist(), py.tolist(), strict=True))
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        else:
            draw.line(points, fill=colour, width=2)
    return image


def write_plot(run_dir: Path) -> Path | None:
    """Write RUN_DIR/plot.png atomically from the run's CSV files; None when nothing to plot."""
    image = render(run_dir)
    if image is None:
        return None
    path = run_dir / "plot.png"
    atomic_write_bytes(path, encode_png(image))
    return path
