"""Sample grids: what the network makes of a few holes, labelled, as a user would get it.

A grid shows training crops (the same ones at every sample, so grids compare across a run) in
four columns: the input with its hole in white, the network's raw output composited into the
hole, the completion `glcic complete` would give (the product's pipeline: fast-marching seed,
network, Poisson blending), and the original. Raw output alone looks worse than what users get,
so both are shown. A user's own image and mask (`--sample-image`, `--sample-mask`) are completed
by the same pipeline in a grid of their own. The title names the step and the phase.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from glcic.errors import InputError
from glcic.model_file import CompletionModel, ModelMetadata
from glcic.networks import CompletionNetwork
from glcic.pipeline import complete
from glcic.training.config import TrainConfig, border_blend_for

TRAINING_COLUMNS = ("input", "network output", "blended (as glcic complete)", "original")
OWN_COLUMNS = ("your image and mask", "completed (as glcic complete)")
#: Cells are enlarged (nearest neighbour) to at least this side so labels fit and pixels show.
MIN_CELL = 160
#: A user's own image is shown at most this wide per cell.
MAX_OWN_CELL = 512
_PAD = 4
_LINE = 14
_BACKGROUND = (32, 32, 32)
_TEXT = (235, 235, 235)


def pipeline_model(
    network: CompletionNetwork,
    mean: tuple[float, float, float],
    config: TrainConfig,
    context_shift: float,
    border_blend: str | None = None,
) -> CompletionModel:
    """The training network (in eval mode) as the pipeline's model: the same metadata an
    export of this run would carry, so the pipeline crops, scales and shifts as it will."""
    metadata = ModelMetadata(
        width=config.width,
        mean=mean,
        train_image_size=config.image_size,
        hole_size_range=(config.hole_min, config.hole_max),
        context_shift=context_shift,
        border_blend=border_blend or border_blend_for(config),
    )
    return CompletionModel(network, metadata)


def blended(model: CompletionModel, image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """`glcic complete`'s result for an HxWx3 uint8 image and an HxW 0/255 mask (hole pixels are
    blanked first, so nothing can peek at them); None where the pipeline refuses the hole."""
    given = image.copy()
    given[mask > 0] = 0
    try:
        return complete(given, mask, model)
    except InputError:
        return None


def training_rows(
    model: CompletionModel, images: torch.Tensor, masks: torch.Tensor, outputs: torch.Tensor
) -> list[list[np.ndarray | None]]:
    """Rows of `TRAINING_COLUMNS` for crops in [0, 1] (N,3,H,W), masks (N,1,H,W) and the raw
    network outputs."""
    rows = []
    for image, mask, output in zip(images, masks, outputs, strict=True):
        hole = mask.expand_as(image)
        shown = image * (1 - hole) + hole
        raw = image * (1 - hole) + output.clamp(0, 1) * hole
        original = _to_uint8(image)
        mask_u8 = (mask[0].numpy() > 0.5).astype(np.uint8) * 255
        rows.append([_to_uint8(shown), _to_uint8(raw), blended(model, original, mask_u8), original])
    return rows


def own_row(model: CompletionModel, image: np.ndarray, mask: np.ndarray) -> list[np.ndarray | None]:
    """A row of `OWN_COLUMNS` for a user's image (RGB or RGBA) and mask (0-255)."""
    rgb = np.ascontiguousarray(image[..., :3])
    hard = np.where(mask > 0, 255, 0).astype(np.uint8)
    shown = rgb.copy()
    shown[hard > 0] = 255
    return [shown, blended(model, rgb, hard)]


def _to_uint8(tensor: torch.Tensor) -> np.ndarray:
    return tensor.clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).contiguous().numpy()


def grid(title: str, columns: tuple[str, ...], rows: list[list[np.ndarray | None]]) -> np.ndarray:
    """An HxWx3 uint8 image: `title`, then the column labels, then the rows of cells (a cell
    the pipeline refused shows "refused")."""
    cells = [cell for row in rows for cell in row if cell is not None]
    height = max(cell.shape[0] for cell in cells)
    width = max(cell.shape[1] for cell in cells)
    scale = max(1, math.ceil(MIN_CELL / max(height, width)))
    if width * scale > MAX_OWN_CELL:
        scale = MAX_OWN_CELL / width
    cell_w, cell_h = max(1, round(width * scale)), max(1, round(height * scale))
    font = ImageFont.load_default()
    top = 2 * _LINE + 2 * _PAD
    canvas = Image.new(
        "RGB",
        (len(columns) * (cell_w + _PAD) + _PAD, top + len(rows) * (cell_h + _PAD)),
        _BACKGROUND,
    )
    draw = ImageDraw.Draw(canvas)
    draw.text((_PAD, _PAD), title, fill=_TEXT, font=font)
    for index, label in enumerate(columns):
        draw.text((_PAD + index * (cell_w + _PAD), _PAD + _LINE), label, fill=_TEXT, font=font)
    for row_index, row in enumerate(rows):
        y = top + row_index * (cell_h + _PAD)
        for column, cell in enumerate(row):
            x = _PAD + column * (cell_w + _PAD)
            if cell is None:
                draw.text((x, y), "refused", fill=_TEXT, font=font)
                continue
            picture = Image.fromarray(cell).resize((cell_w, cell_h), Image.NEAREST)
            canvas.paste(picture, (x, y))
    return np.asarray(canvas)


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
