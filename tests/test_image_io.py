"""Reading images and masks: bit depths, EXIF orientation, damaged metadata."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from glcic import InputError
from glcic.image_io import read_image, read_mask


def test_sixteen_bit_and_float_images_keep_their_tones(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp).save(tmp_path / "mask16.png")
    mask = read_mask(tmp_path / "mask16.png")
    assert len(np.unique(mask)) > 200
    assert mask.min() == 0 and mask.max() == 255
    Image.fromarray(ramp).save(tmp_path / "photo16.png")
    assert len(np.unique(read_image(tmp_path / "photo16.png"))) > 200
    floats = np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(floats, mode="F").save(tmp_path / "mask.tif")
    assert len(np.unique(read_mask(tmp_path / "mask.tif"))) > 200


def test_mask_follows_exif_orientation_like_the_image(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (40, 20), (10, 20, 30)).save(tmp_path / "photo.jpg", exif=exif)
    Image.new("L", (40, 20), 255).save(tmp_path / "mask.jpg", exif=exif)
    assert read_image(tmp_path / "photo.jpg").shape[:2] == read_mask(tmp_path / "mask.jpg").shape


def test_garbage_exif_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "exif.png"
    Image.new("RGB", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    chunk = b"eXIf" + b"garbage!"
    import zlib

    crc = struct.pack(">I", zlib.crc32(chunk))
    insert_at = data.index(b"IDAT") - 4
    path.write_bytes(
        bytes(data[:insert_at]) + struct.pack(">I", 8) + chunk + crc + bytes(data[insert_at:])
    )
    try:
        pixels = read_image(path)
    except InputError:
        return  # refused with a message: fine
    assert pixels.shape == (8, 8, 3)  # or read, ignoring the damaged EXIF
