"""Import of Torch7 completion models, checked against an independent float64 reference."""

from __future__ import annotations

import copy
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from support.torch7 import (
    TORCH,
    T7Object,
    Writer,
    completion_file,
    official_like_modules,
    reference_forward,
    t7_bytes,
    write_t7,
)

from glcic import Torch7ImportError, load_model, save_model
from glcic.cli import main
from glcic.networks import prepare_input
from glcic.torch7 import OFFICIAL_LICENCE, import_torch7


def _network_input(rng: np.random.Generator, height: int, width: int, mean) -> torch.Tensor:
    rgb = torch.from_numpy(rng.uniform(0, 1, (1, 3, height, width)).astype(np.float32))
    hole = torch.zeros(1, 1, height, width)
    hole[..., height // 4 : height // 2, width // 3 : 2 * width // 3] = 1.0
    return prepare_input(rgb, hole, torch.tensor(mean, dtype=torch.float32))


@pytest.mark.parametrize(
    ("bn_eps", "legacy_std"), [(1e-5, False), (0.1, False), (1e-5, True)], ids=str
)
def test_imported_network_matches_float64_reference(tmp_path: Path, bn_eps, legacy_std) -> None:
    rng = np.random.default_rng(7)
    modules = official_like_modules(rng, width=0.25, bn_eps=bn_eps, legacy_std=legacy_std)
    path = write_t7(tmp_path / "completionnet_places2.t7", completion_file(modules))

    model = import_torch7(path)

    assert model.metadata.width == 0.25
    assert model.metadata.mean == pytest.approx((0.4560, 0.4472, 0.4155), abs=1e-6)
    # 72x80: the quarter-resolution map (18x20) is wider than the largest dilation (16).
    x = _network_input(rng, 72, 80, model.metadata.mean)
    with torch.no_grad():
        ours = model.network(x)[0].double().numpy()
    expected = reference_forward(modules, x[0].numpy())
    assert ours.shape == expected.shape == (3, 72, 80)
    assert np.abs(ours - expected).max() < 1e-4
    assert expected.std() > 0.01  # the comparison is not between two constants


def test_import_cli_writes_model_with_licence(tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(1)
    modules = official_like_modules(rng)
    t7 = write_t7(tmp_path / "completionnet_places2_freeform.t7", completion_file(modules))
    out = tmp_path / "models" / "places2.safetensors"

    assert main(["import-t7", str(t7), str(out)]) == 0

    model = load_model(out)
    assert model.metadata.provenance.licence == OFFICIAL_LICENCE
    assert model.metadata.provenance.data == "Places2"
    assert "free-form" in model.metadata.notes
    assert "CC BY-NC-SA 4.0" in capsys.readouterr().out
    # The saved file computes what the imported network computes.
    direct = import_torch7(t7)
    x = _network_input(rng, 32, 32, model.metadata.mean)
    with torch.no_grad():
        assert torch.equal(model.network(x), direct.network(x))


def _mutated(rng: np.random.Generator, index: int, change) -> dict:
    modules = official_like_modules(rng)
    modules = copy.deepcopy(modules)
    change(modules, index)
    return completion_file(modules)


def _set_field(name: str, value):
    def change(modules, index):
        modules[index].fields[name] = value

    return change


@pytest.mark.parametrize(
    ("index", "change", "message"),
    [
        (18, _set_field("dilationW", 1), "module 19 (nn.SpatialDilatedConvolution): dilationW"),
        (18, _set_field("padW", 1), "module 19 (nn.SpatialDilatedConvolution): padW is 1"),
        (3, _set_field("dW", 1), "module 4 (nn.SpatialConvolution): dW is 1"),
        (36, _set_field("adjW", 1), "module 37 (nn.SpatialFullConvolution): adjW is 1"),
        (
            1,
            lambda m, i: m.__setitem__(i, T7Object("nn.ReLU")),
            "module 2 (nn.ReLU): expected nn.SpatialBatchNormalization",
        ),
        # BatchNorm after ReLU: the defect of the popular reimplementation.
        (
            1,
            lambda m, i: m.__setitem__(slice(i, i + 2), [m[i + 1], m[i]]),
            "module 2 (nn.ReLU): expected nn.SpatialBatchNormalization",
        ),
        (0, _set_field("weight", np.zeros((16, 4, 3, 3), np.float32)), "'weight' has shape"),
        (0, _set_field("bias", None), "has no 'bias' tensor"),
        (0, _set_field("weight", np.full((16, 4, 5, 5), np.nan, np.float32)), "NaN"),
        (49, lambda m, i: m.append(T7Object("nn.Tanh")), "module 51 (nn.Tanh): unexpected"),
        (49, lambda m, i: m.pop(), "the model ends after 49 modules"),
        (49, lambda m, i: m.__setitem__(i, T7Object("nn.Tanh")), "expected nn.Sigmoid"),
    ],
)
def test_structure_mismatch_names_first_bad_module(tmp_path, index, change, message) -> None:
    rng = np.random.default_rng(3)
    path = write_t7(tmp_path / "model.t7", _mutated(rng, index, change))
    with pytest.raises(Torch7ImportError) as error:
        import_torch7(path)
    assert message in str(error.value)


def test_nested_sequential_is_accepted(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    modules = official_like_modules(rng)
    nested = [T7Object("nn.Sequential", {"modules": modules[:10]}), *modules[10:]]
    path = write_t7(tmp_path / "nested.t7", completion_file(nested))
    assert import_torch7(path).metadata.width == 0.25


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "ends unexpectedly"),
        (b"\x63\x00\x00\x00garbage", "not a readable binary Torch7 file"),
        (b"\x07\x00\x00\x00garbage", "truncated, or not a binary Torch7 file"),
        (pickle.dumps({"model": 1}), "not a readable binary Torch7 file"),
        (t7_bytes({"mean": [0.5, 0.5, 0.5]}), "expected a table with 'model' and 'mean'"),
        (t7_bytes([1, 2, 3]), "expected a table"),
    ],
)
def test_unreadable_or_foreign_files_are_refused(tmp_path, content, message) -> None:
    path = tmp_path / "bad.t7"
    path.write_bytes(content)
    with pytest.raises(Torch7ImportError) as error:
        import_torch7(path)
    assert message in str(error.value)


def test_truncated_file_is_refused_at_every_cut(tmp_path: Path) -> None:
    data = t7_bytes(completion_file(official_like_modules(np.random.default_rng(5))))
    path = tmp_path / "cut.t7"
    for cut in (5, 100, len(data) // 3, len(data) // 2, len(data) - 3):
        path.write_bytes(data[:cut])
        with pytest.raises(Torch7ImportError):
            import_torch7(path)


def test_bad_mean_is_refused(tmp_path: Path) -> None:
    modules = official_like_modules(np.random.default_rng(6))
    path = write_t7(tmp_path / "m.t7", completion_file(modules, mean=[0.5, 0.5]))
    with pytest.raises(Torch7ImportError, match="'mean'"):
        import_torch7(path)


def test_import_cli_reports_errors_with_exit_code_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.t7"
    bad.write_bytes(b"\x00" * 3)
    out = tmp_path / "out.safetensors"
    assert main(["import-t7", str(bad), str(out)]) == 2
    assert main(["import-t7", str(tmp_path / "missing.t7"), str(out)]) == 2
    err = capsys.readouterr().err
    assert "glcic: error:" in err and "no such file" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_imported_model_round_trips_through_model_file(tmp_path: Path) -> None:
    modules = official_like_modules(np.random.default_rng(8))
    model = import_torch7(write_t7(tmp_path / "completionnet_celeba.t7", completion_file(modules)))
    assert model.metadata.provenance.data == "CelebA"
    save_model(model, tmp_path / "celeba.safetensors")
    loaded = load_model(tmp_path / "celeba.safetensors")
    for (name, a), (_, b) in zip(
        model.network.state_dict().items(), loaded.network.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def _bomb_bytes() -> bytes:
    """A tensor of 4 x 2^28 elements over a one-element storage (stride 0)."""
    writer = Writer()
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
    writer = Writer()
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
