"""Reading images and masks from files, and writing results, for the command line.

Pillow does the decoding. We normalise to what the pipeline takes (8-bit RGB or RGBA, and an
8-bit mask) and turn every decoding failure into an `InputError` naming the file.
"""

from __future__ import annotations

import struct
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
    """Decode fully, upright per EXIF orientation, with deep images reduced to 8 bits."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
            image = ImageOps.exif_transpose(image)
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError(f"{path}: not an image Pillow can read, or too large") from None
    except (OSError, SyntaxError, ValueError, struct.error) as error:
        raise InputError(f"{path}: cannot be decoded ({error})") from None
    return _to_8bit(image)


def _to_8bit(image: Image.Image) -> Image.Image:
    """Single-channel 16-bit, 32-bit integer and float images scaled (not clipped) to 8 bits.

    Pillow's own conversion to "L" clips such values at 255, which turns a 16-bit photo or mask
    into black and white. Integer images are taken as 16-bit (0..65535) when any value exceeds
    255, floats as 0..1 when all values lie there.
    """
    if image.mode not in ("I;16", "I;16B", "I;16L", "I", "F"):
        return image
    values = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        top = 1.0 if values.size and values.min() >= 0 and values.max() <= 1.0 else 255.0
    else:
        top = 65535.0 if values.size and values.max() > 255 else 255.0
    scaled = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def read_image(path: str | Path) -> np.ndarray:
    """HxWx3 or (if the file has transparency) HxWx4 uint8, upright per its EXIF orientation."""
    image = _open(Path(path))
    image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    return np.asarray(image).copy()


def read_mask(path: str | Path) -> np.ndarray:
    """HxW uint8 mask: 255 = fill. From a grayscale image, or from the alpha channel of a file
    that has a non-opaque one (a selection saved as transparency). Upright per EXIF, like the
    image it goes with."""
    image = _open(Path(path))
    if _has_alpha(image):
        alpha = np.asarray(image.convert("RGBA"))[..., 3]
        if alpha.min() < 255:
            return alpha.copy()
    return np.asarray(image.convert("L")).copy()


def check_writable_format(path: str | Path) -> None:
    """Fail before any work if Pillow cannot write the format the extension names, or if the
    folder to write into does not exist (creating folders from a typo would hide the output)."""
    folder = Path(path).parent
    if not folder.is_dir():
        raise InputError(f"{path}: the folder {folder} does not exist")
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
