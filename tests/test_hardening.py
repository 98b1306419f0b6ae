"""Regression tests for damaged, hostile and unusual input found in review."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from test_pipeline import _OffsetGradientNetwork
from torch7_support import (
    TORCH,
    T7Object,
    _Writer,
    completion_file,
    official_like_modules,
    write_t7,
)

from glcic import (
    CompletionModel,
    CompletionNetwork,
    InputError,
    ModelFileError,
    ModelMetadata,
    Torch7ImportError,
    complete,
    load_model,
    save_model,
)
from glcic.image_io import read_image, read_mask
from glcic.model_file import METADATA_KEY
from glcic.torch7 import import_torch7


def test_hole_at_image_edge_does_not_bring_back_what_it_removes() -> None:
    image = np.full((120, 160, 3), 128, np.uint8)
    image[40:80, 0:20] = (255, 0, 0)  # an object touching the left edge
    mask = np.zeros((120, 160), np.uint8)
    mask[35:85, 0:25] = 255
    flat = CompletionModel(
        _OffsetGradientNetwork(0.0, base=128 / 255).eval(), ModelMetadata(hole_size_range=(48, 96))
    )
    out = complete(image, mask, flat, margin=32, max_working_side=256)
    filled = out[35:85, 0:25].astype(int)
    assert np.abs(filled - 128).max() <= 2


def _bomb_bytes() -> bytes:
    """A tensor of 4 x 2^28 elements over a one-element storage (stride 0)."""
    writer = _Writer()
    writer.int32(TORCH)
    writer.index()
    writer.string("V 1")
    writer.string("torch.FloatTensor")
    writer.int32(2)
    for value in (4, 1 << 28, 0, 0, 1):  # sizes, strides, offset
        writer.int64(value)
    writer.int32(TORCH)
    writer.index()
    writer.string("V 1")
    writer.string("torch.FloatStorage")
    writer.int64(1)
    writer.chunks.append(struct.pack("<f", 1.0))
    return b"".join(writer.chunks)


def test_tensor_expanding_over_a_tiny_storage_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.t7"
    path.write_bytes(_bomb_bytes())
    with pytest.raises(Torch7ImportError, match="claims 1073741824 elements"):
        import_torch7(path)


def test_damaged_module_structures_are_import_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cases = []
    modules = official_like_modules(rng)
    modules[0] = T7Object("nn.SpatialConvolution", None)  # a nil field table
    cases.append(completion_file(modules))
    modules = official_like_modules(rng)
    modules[0] = T7Object("nn.SpatialConvolution", [1, 2, 3])  # a list, not a table
    cases.append(completion_file(modules))
    modules = official_like_modules(rng)
    modules[0].fields["nInputPlane"] = np.array([4.0, 4.0], np.float32)
    cases.append(completion_file(modules))
    cases.append({"model": T7Object("nn.Sequential", "modules"), "mean": [0.5, 0.5, 0.5]})
    for index, data in enumerate(cases):
        path = write_t7(tmp_path / f"case{index}.t7", data)
        with pytest.raises(Torch7ImportError):
            import_torch7(path)


def test_sequential_that_contains_itself_is_refused(tmp_path: Path) -> None:
    # Table ids: 1 = outer table, 2 = the Sequential, 3 = its field table, 4 = its module list;
    # the list's only element refers back to object 2.
    writer = _Writer()
    writer.int32(3), writer.int32(1), writer.int32(2)  # outer table: model and mean
    writer.obj("model")
    writer.int32(TORCH), writer.int32(2), writer.string("V 1"), writer.string("nn.Sequential")
    writer.int32(3), writer.int32(3), writer.int32(1)  # field table with one entry
    writer.obj("modules")
    writer.int32(3), writer.int32(4), writer.int32(1)  # module list with one entry
    writer.obj(1)
    writer.int32(TORCH), writer.int32(2)  # a reference to object 2 again
    writer.obj("mean")
    writer.int32(3), writer.int32(5), writer.int32(3)  # the mean colour, a list of three
    for key in (1, 2, 3):
        writer.obj(key), writer.obj(0.5)
    path = tmp_path / "loop.t7"
    path.write_bytes(b"".join(writer.chunks))
    with pytest.raises(Torch7ImportError, match="contains itself"):
        import_torch7(path)


def _tiny() -> CompletionModel:
    return CompletionModel(CompletionNetwork(0.125).eval(), ModelMetadata(width=0.125))


def test_model_files_with_impossible_values_are_refused(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CompletionModel(
        __import__("glcic").CompletionNetwork(0.125).eval(), ModelMetadata(width=0.125)
    )
    good = tmp_path / "good.safetensors"
    save_model(model, good)
    tensors = load_file(str(good))
    from safetensors import safe_open

    with safe_open(str(good), "pt") as handle:
        header = handle.metadata()
    bad = dict(tensors)
    bad["layers.1.running_var"] = -torch.ones_like(bad["layers.1.running_var"])
    save_file(bad, str(tmp_path / "negvar.safetensors"), metadata=header)
    with pytest.raises(ModelFileError, match="negative variances"):
        load_model(tmp_path / "negvar.safetensors")
    document = json.loads(header[METADATA_KEY])
    document["metadata"]["width"] = 10**400
    save_file(tensors, str(tmp_path / "huge.safetensors"),
              metadata={METADATA_KEY: json.dumps(document)})  # fmt: skip
    with pytest.raises(ModelFileError, match="width must be a finite number"):
        load_model(tmp_path / "huge.safetensors")
    save_file(tensors, str(tmp_path / "deep.safetensors"), metadata={METADATA_KEY: "[" * 200000})
    with pytest.raises(ModelFileError, match=r"nested too deeply|not valid JSON"):
        load_model(tmp_path / "deep.safetensors")


def test_float16_overflow_is_refused_before_writing(tmp_path: Path) -> None:
    model = CompletionModel(
        __import__("glcic").CompletionNetwork(0.125).eval(), ModelMetadata(width=0.125)
    )
    with torch.no_grad():
        model.network.layers[0].weight[0, 0, 0, 0] = 1e6
    with pytest.raises(ModelFileError, match="float16"):
        save_model(model, tmp_path / "m.safetensors", storage="float16")
    assert not (tmp_path / "m.safetensors").exists()


def test_unwritable_model_path_is_a_model_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    model = CompletionModel(
        __import__("glcic").CompletionNetwork(0.125).eval(), ModelMetadata(width=0.125)
    )
    with pytest.raises(ModelFileError, match="cannot be written"):
        save_model(model, blocker / "m.safetensors")


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


@pytest.mark.parametrize("shape", [(1, 30), (2, 30), (30, 2), (2, 2)])
def test_strips_one_or_two_pixels_wide(tiny_model, shape) -> None:
    image = np.full((*shape, 3), 90, np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[0, 0] = 255
    out = complete(image, mask, tiny_model)
    assert out.shape == image.shape
    assert np.array_equal(out[mask == 0], image[mask == 0])


def test_zero_one_masks_are_refused_with_advice(tiny_model) -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    mask = np.zeros((32, 32), np.uint8)
    mask[8:16, 8:16] = 1
    with pytest.raises(InputError, match="use 255"):
        complete(image, mask, tiny_model)
