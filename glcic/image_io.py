"""Reading images and masks from files, and writing results, for the command line.

Pillow does the decoding. We normalise to what the pipeline takes (8-bit RGB or RGBA, and an
8-bit mask) and turn every decoding failure into an `InputError` naming the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from glcic.atomic import atomic_path
from glcic.errors import InputError

# Photos up to 16384x16384 RGBA (1 GiB) are accepted; Pillow's default guard warns far below that.
Image.MAX_IMAGE_PIXELS = 16384 * 16384

_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _open(path: Path) -> Image.Image:
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: not an image Pillow can read, or too large") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InputError(f"{path}: cannot be decoded ({error})") from None
    return image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def read_image(path: str | Path) -> np.ndarray:
    """HxWx3 or (if the file has transparency) HxWx4 uint8, upright per its EXIF orientation."""
    image = ImageOps.exif_transpose(_open(Path(path)))
    image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    return np.asarray(image).copy()


def read_mask(path: str | Path) -> np.ndarray:
    """HxW uint8 mask: 255 = fill. From a grayscale image, or from the alpha channel of a file
    that has a non-opaque one (a selection saved as transparency)."""
    image = _open(Path(path))
    if _has_alpha(image):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if alpha.min() < 255:
            return alpha.copy()
    return np.asarray(image.convert("L")).copy()


def check_writable_format(path: str | Path) -> None:
    """Fail before any work if Pillow cannot write the format the extension names."""
    suffix = Path(path).suffix.lower()
    Image.init()
    if suffix not in Image.registered_extensions():
        raise InputError(f"{path}: unknown image format {suffix or '(no extension)'!r}")
    if Image.registered_extensions()[suffix] not in Image.SAVE:
        raise InputError(f"{path}: cannot write {suffix} files")


def write_image(path: str | Path, pixels: np.ndarray) -> str | None:
    """Write `pixels` in the format the extension names; returns a warning, if any, for the user.

    Formats without an alpha channel (JPEG) get the RGB channels; the warning says so.
    """
    path = Path(path)
    check_writable_format(path)
    image = Image.fromarray(pixels)
    note = None
    if image.mode == "RGBA" and path.suffix.lower() in (".jpg", ".jpeg", ".jpe", ".jfif"):
        image = image.convert("RGB")
        note = f"{path.name}: JPEG has no alpha channel; the alpha was dropped"
    image_format = Image.registered_extensions()[path.suffix.lower()]
    options = {"quality": 95} if image_format in ("JPEG", "WEBP") else {}
    try:
        # Atomic: an interrupted write never leaves a torn file where a good one was.
        with atomic_path(path) as tmp:
            image.save(tmp, format=image_format, **options)
    except (OSError, ValueError, KeyError) as error:
        raise InputError(f"{path}: cannot be written ({error})") from None
    return note
