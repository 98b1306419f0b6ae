"""Model files: bit-exact round trips, atomic writes, and a precise message for each defect."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from glcic import (
    CompletionModel,
    ModelFileError,
    ModelMetadata,
    Provenance,
    load_model,
    new_model,
    save_model,
)
from glcic.atomic import atomic_write_bytes
from glcic.model_file import METADATA_KEY, read_model_metadata


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = new_model(
        ModelMetadata(
            width=0.25,
            mean=(0.5, 0.4, 0.3),
            train_image_size=128,
            hole_size_range=(48, 64),
            context_shift=0.4,
            border_blend="mirror",
            provenance=Provenance(
                source="test", data="synthetic", steps={"completion": 5}, licence="MIT"
            ),
            notes="round trip",
            extra={"evaluation": {"psnr": 20.5}},
        )
    )
    # Non-trivial BatchNorm statistics, so the round trip covers buffers too.
    for module in m.network.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.num_batches_tracked.fill_(17)
    return m


def _state_equal(a, b) -> None:
    sa, sb = a.network.state_dict(), b.network.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype, name
        assert torch.equal(sa[name], sb[name]), name


def test_round_trip_is_bit_exact_with_metadata(tmp_path: Path, model) -> None:
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    loaded = load_model(path)
    _state_equal(model, loaded)
    assert loaded.metadata == model.metadata
    assert read_model_metadata(path) == model.metadata
    assert not loaded.network.training
    x = torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.network(x), loaded.network(x))


def test_float16_storage_halves_file_and_loads_as_float32(tmp_path: Path, model) -> None:
    save_model(model, tmp_path / "a.safetensors")
    save_model(model, tmp_path / "b.safetensors", storage="float16")
    full, half = (os.path.getsize(tmp_path / n) for n in ("a.safetensors", "b.safetensors"))
    assert half < 0.6 * full
    loaded = load_model(tmp_path / "b.safetensors")
    for name, tensor in loaded.network.state_dict().items():
        reference = model.network.state_dict()[name]
        assert tensor.dtype == reference.dtype
        assert torch.allclose(tensor.float(), reference.float(), rtol=1e-3, atol=1e-4)


def test_write_is_atomic_when_the_writer_fails(tmp_path: Path, model, monkeypatch) -> None:
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    before = path.read_bytes()

    def broken_save(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("glcic.model_file.save_file", broken_save)
    with pytest.raises(ModelFileError, match="No space"):
        save_model(model, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def _rewrite(path: Path, tensors=None, header=None, raw_metadata=None) -> None:
    """Write a safetensors file with the given tensors and (possibly broken) glcic header."""
    metadata = raw_metadata if raw_metadata is not None else {METADATA_KEY: json.dumps(header)}
    save_file(tensors, str(path), metadata=metadata)


def _valid_parts(model, tmp_path: Path):
    path = tmp_path / "valid.safetensors"
    save_model(model, path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        header = json.loads(handle.metadata()[METADATA_KEY])
    return load_file(str(path)), header


def _case_newer_version(tensors, header):
    header["format_version"] = 99
    return tensors, header, "format version 99 is newer"


def _case_architecture(tensors, header):
    header["architecture"] = "pix2pix"
    return tensors, header, "unknown architecture 'pix2pix'"


def _case_shape(tensors, header):
    tensors["layers.0.weight"] = torch.zeros(16, 4, 3, 3)
    return tensors, header, "'layers.0.weight' has shape (16, 4, 3, 3), expected (16, 4, 5, 5)"


def _case_missing(tensors, header):
    del tensors["layers.3.weight"]
    return tensors, header, "tensor 'layers.3.weight' is missing"


def _case_unexpected(tensors, header):
    tensors["layers.99.weight"] = torch.zeros(1)
    return tensors, header, "unexpected tensor 'layers.99.weight'"


def _case_nan(tensors, header):
    tensors["layers.4.bias"] = torch.full_like(tensors["layers.4.bias"], float("nan"))
    return tensors, header, "'layers.4.bias' holds NaN"


def _case_dtype(tensors, header):
    tensors["layers.0.bias"] = tensors["layers.0.bias"].to(torch.int32)
    return tensors, header, "'layers.0.bias' is stored as torch.int32"


def _case_width_mismatch(tensors, header):
    header["metadata"]["width"] = 0.5
    return tensors, header, "for a width-0.5 network"


def _case_bad_metadata(tensors, header):
    header["metadata"]["hole_size_range"] = [128, 96]
    return tensors, header, "bad metadata: hole_size_range"


def _case_bad_mean(tensors, header):
    header["metadata"]["mean"] = [0.5, "x", 0.5]
    return tensors, header, "bad metadata: mean must be a finite number"


def _case_context_shift_out_of_range(tensors, header):
    header["metadata"]["context_shift"] = 1.5
    return tensors, header, "bad metadata: context_shift 1.5 is outside [0, 1]"


def _case_context_shift_not_a_number(tensors, header):
    header["metadata"]["context_shift"] = "half"
    return tensors, header, "bad metadata: context_shift must be a finite number"


def _case_unknown_border_blend(tensors, header):
    header["metadata"]["border_blend"] = "smear"
    return tensors, header, "bad metadata: border_blend must be one of telea, mirror, got 'smear'"


def _case_absurd_mean(tensors, header):
    header["metadata"]["mean"] = [1e300, -1e300, 0]
    return tensors, header, "bad metadata: mean [1e+300, -1e+300, 0.0] is outside [0, 1]"


def _case_boolean_version(tensors, header):
    header["format_version"] = True
    return tensors, header, "the format version is a boolean, not an integer"


def _case_huge_train_size(tensors, header):
    header["metadata"]["train_image_size"] = 10**12
    return tensors, header, "bad metadata: train_image_size must be an integer from 1 to 8192"


def _case_negative_steps(tensors, header):
    header["metadata"]["provenance"]["steps"] = {"joint": -5}
    return tensors, header, "bad metadata: provenance.steps must map phase names to step counts"


@pytest.mark.parametrize(
    "case",
    [
        _case_absurd_mean,
        _case_boolean_version,
        _case_huge_train_size,
        _case_negative_steps,
        _case_newer_version,
        _case_architecture,
        _case_shape,
        _case_missing,
        _case_unexpected,
        _case_nan,
        _case_dtype,
        _case_width_mismatch,
        _case_bad_metadata,
        _case_bad_mean,
        _case_context_shift_out_of_range,
        _case_context_shift_not_a_number,
        _case_unknown_border_blend,
    ],
)
def test_inconsistent_files_say_what_is_wrong(tmp_path: Path, model, case) -> None:
    tensors, header = _valid_parts(model, tmp_path)
    tensors, header, message = case(tensors, header)
    path = tmp_path / "bad.safetensors"
    _rewrite(path, tensors, header)
    with pytest.raises(ModelFileError) as error:
        load_model(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("shift", [-0.1, 1.5, float("nan")])
def test_metadata_refuses_a_context_shift_outside_0_1(shift) -> None:
    """Refused when built, so no code path writes a file that would then not load."""
    with pytest.raises(ValueError, match="context_shift"):
        ModelMetadata(context_shift=shift)


def test_files_without_context_shift_run_on_colours_as_they_are(tmp_path: Path, model) -> None:
    """Files written before the field existed (and imported weights) mean no shift."""
    tensors, header = _valid_parts(model, tmp_path)
    del header["metadata"]["context_shift"]
    path = tmp_path / "older.safetensors"
    _rewrite(path, tensors, header)
    assert load_model(path).metadata.context_shift == 0.0


def test_files_without_border_blend_pin_the_image_edge_as_before(tmp_path: Path, model) -> None:
    tensors, header = _valid_parts(model, tmp_path)
    del header["metadata"]["border_blend"]
    path = tmp_path / "older.safetensors"
    _rewrite(path, tensors, header)
    assert load_model(path).metadata.border_blend == "telea"
    with pytest.raises(ValueError, match="border_blend"):
        ModelMetadata(border_blend="free")


def test_safetensors_without_glcic_metadata_is_foreign(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(ModelFileError, match="not a glcic model"):
        load_model(path)


def test_invalid_json_metadata(tmp_path: Path) -> None:
    path = tmp_path / "j.safetensors"
    _rewrite(path, {"w": torch.zeros(2)}, raw_metadata={METADATA_KEY: "{not json"})
    with pytest.raises(ModelFileError, match="not valid JSON"):
        load_model(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty or truncated"),
        (b"PK\x03\x04" + b"\x00" * 100, "not in safetensors format"),
        (b"\x80\x04\x95" + b"\x00" * 200, "not in safetensors format"),
    ],
)
def test_foreign_bytes_are_refused(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.safetensors"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_torch_pickle_is_refused_without_unpickling(tmp_path: Path, model) -> None:
    path = tmp_path / "model.pt"
    torch.save(model.network.state_dict(), path)
    with pytest.raises(ModelFileError, match="not in safetensors format"):
        load_model(path)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ('{"glcic": {"format_version": 1}}', "'glcic' metadata is a object, not a string"),
        ('"glcic"', "safetensors metadata is a string, not an object"),
        ("5", "safetensors metadata is a number, not an object"),
    ],
)
def test_metadata_of_the_wrong_json_type_is_named(tmp_path: Path, metadata, message) -> None:
    """safetensors' writer only stores strings, so a crafted header is written by hand."""
    header = json.dumps(
        {"__metadata__": "PLACEHOLDER", "w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    ).replace('"PLACEHOLDER"', metadata)
    path = tmp_path / "typed.safetensors"
    raw = header.encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(4))
    for read in (load_model, read_model_metadata):
        with pytest.raises(ModelFileError) as error:
            read(path)
        assert message in str(error.value)
        assert str(path) in str(error.value)


def _write_raw(path: Path, entries: dict, data: bytes) -> None:
    raw = json.dumps(entries).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


@pytest.mark.parametrize(
    ("entries", "data", "message"),
    [
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            bytes(12),
            "tensors 'a' and 'b' overlap",
        ),
        (
            {"a": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}},
            bytes(8),
            "needs 4835703278458516698824704 bytes, its offsets give 8",
        ),
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 2**62]}},
            bytes(8),
            "needs 8 bytes, its offsets give 4611686018427387904",
        ),
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
            bytes(9),
            "1 bytes of unexpected data after the last tensor",
        ),
        (
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
            bytes(12),
            "unused bytes before tensor 'a'",
        ),
        (
            {"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 8]}},
            bytes(8),
            "tensor 'a' has unknown dtype 'Q4'",
        ),
        (
            {"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}},
            bytes(8),
            "tensor 'a' has an invalid shape",
        ),
    ],
)
def test_impossible_layouts_are_refused_before_reading(
    tmp_path: Path, entries, data, message
) -> None:
    path = tmp_path / "layout.safetensors"
    _write_raw(path, entries, data)
    with pytest.raises(ModelFileError) as error:
        read_model_metadata(path)
    assert message in str(error.value)


def test_a_huge_tail_is_refused_from_the_size_alone(tmp_path: Path, model, monkeypatch) -> None:
    """A valid model followed by a sparse 3 GiB tail: refused before any tensor is read, so
    loading it costs neither the memory nor the time of the tail (it once took 6.5 GB)."""
    from glcic.tensor_file import TensorFile

    path = tmp_path / "tail.safetensors"
    save_model(model, path)
    size = path.stat().st_size
    os.truncate(path, size + 3 * 2**30)

    def must_not_read(*args, **kwargs):
        raise AssertionError("tensors were read from a file whose size is wrong")

    monkeypatch.setattr(TensorFile, "read_many", must_not_read)
    with pytest.raises(ModelFileError, match=f"{3 * 2**30} bytes of unexpected data"):
        load_model(path)


def test_a_header_too_large_says_so(tmp_path: Path) -> None:
    path = tmp_path / "big-header.safetensors"
    path.write_bytes((100 * 2**20).to_bytes(8, "little") + b"{" + bytes(16))
    with pytest.raises(ModelFileError, match="header claims 100 MB, more than the 16 MB"):
        load_model(path)


def test_a_file_that_shrinks_while_loading_gives_a_clear_error(tmp_path: Path, model) -> None:
    """The tensors are read, not mapped: a file cut short under the reader is an error, not
    a SIGBUS that would kill the daemon."""
    from glcic import tensor_file

    path = tmp_path / "m.safetensors"
    save_model(model, path)
    opened = tensor_file.open_tensor_file(path)
    os.truncate(path, opened.data_start + 100)
    with pytest.raises(ModelFileError, match="the file changed while it was read"):
        opened.read_many(list(opened.tensors))


def test_a_file_replaced_between_header_and_tensors_is_not_read_with_old_offsets(
    tmp_path: Path, model
) -> None:
    """An atomic replace (rename) after the header was read: the tensors would come from the
    new file at the old file's offsets, wrong weights without an error, were it not checked."""
    from glcic import tensor_file

    path = tmp_path / "m.safetensors"
    save_model(model, path)
    opened = tensor_file.open_tensor_file(path)
    torch.manual_seed(1)
    save_model(new_model(model.metadata), path)  # same size, other weights, a new inode
    with pytest.raises(ModelFileError, match="the file changed while it was read"):
        opened.read_many(list(opened.tensors))


def test_truncated_file_is_reported_as_truncated(tmp_path: Path, model) -> None:
    path = tmp_path / "m.safetensors"
    save_model(model, path)
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 1):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="truncated"):
            load_model(path)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "nope.safetensors")
    with pytest.raises(ModelFileError, match="not a file"):
        load_model(tmp_path)


def test_bad_storage_argument(tmp_path: Path, model) -> None:
    with pytest.raises(ValueError, match="storage"):
        save_model(model, tmp_path / "m.safetensors", storage="int8")


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_atomic_writes_get_ordinary_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    os.umask(umask)
    fresh = tmp_path / "fresh.png"
    atomic_write_bytes(fresh, b"new")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # not the temp file's 0600
    shared = tmp_path / "shared.png"
    shared.write_bytes(b"old")
    shared.chmod(0o640)
    atomic_write_bytes(shared, b"new")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o640 and shared.read_bytes() == b"new"
    secret = tmp_path / "secret.json"
    atomic_write_bytes(secret, b"{}", mode=0o600)
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600


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
