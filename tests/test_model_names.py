"""One rule for naming a model (a path, a name in the model folder, or `default`), in every command.

The commands run in this process (their `main`), so each case costs milliseconds, not a torch
import; the daemon's side of the rule is in test_daemon.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support.daemon import save_tiny

from glcic import cli, default_model
from glcic.daemon import cli as daemon_cli
from glcic.errors import ModelFileError
from glcic.model_listing import folder_models, format_models
from glcic.model_names import available_models, daemon_model_name, resolve_model
from glcic.training import eval_cli


@pytest.fixture
def home(tmp_path: Path, monkeypatch) -> Path:
    """A GLCIC_HOME with an empty model folder, the packaged model left as it ships."""
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path / "home"))
    (tmp_path / "home" / "models").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


@pytest.fixture
def keep_threads():
    """Commands set torch's thread count for the whole process: put it back after."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_path_a_name_with_or_without_suffix(home: Path, tmp_path: Path) -> None:
    mine = save_tiny(home, "mine")
    elsewhere = save_tiny(tmp_path, "elsewhere")  # tmp_path/models/elsewhere.safetensors
    assert resolve_model("mine") == mine
    assert resolve_model("mine.safetensors") == mine
    assert resolve_model(elsewhere) == elsewhere
    assert resolve_model(str(elsewhere.relative_to(tmp_path))) == Path(
        "models/elsewhere.safetensors"
    )


def test_default_is_the_users_default_else_the_packaged_one(home: Path) -> None:
    assert resolve_model("default") == default_model.PACKAGED_MODEL
    assert [(m.name, m.builtin) for m in available_models()] == [("default", True)]
    own = save_tiny(home, "default")
    assert resolve_model("default") == own == default_model.default_model_path()
    assert [(m.name, m.path, m.builtin) for m in available_models()] == [("default", own, False)]


def test_default_is_a_keyword_even_beside_a_file_named_default(home: Path, tmp_path: Path) -> None:
    (tmp_path / "default").write_bytes(b"a file that happens to be called default")
    assert resolve_model("default") == default_model.PACKAGED_MODEL
    assert resolve_model("./default") == Path("default")


def test_no_match_says_where_it_looked_and_what_is_there(home: Path) -> None:
    save_tiny(home, "street")
    (home / "models" / ".street.safetensors.tmp123.safetensors").write_bytes(b"half written")
    with pytest.raises(ModelFileError) as error:
        resolve_model("stret")
    message = str(error.value)
    assert message == (
        "no model file or model named 'stret'; available: default (built-in), street "
        f"(model folder: {home / 'models'})"
    )
    with pytest.raises(ModelFileError, match=r"no such model file 'no/such\.safetensors'"):
        resolve_model("no/such.safetensors")
    with pytest.raises(ModelFileError, match="is a folder, not a model file"):
        resolve_model(home)
    with pytest.raises(ModelFileError, match="empty model name"):
        resolve_model("")


def test_an_empty_folder_and_no_packaged_model(home: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(default_model, "PACKAGED_MODEL", tmp_path / "absent.safetensors")
    assert available_models() == []
    with pytest.raises(ModelFileError, match=r"no models are installed \(model folder: "):
        resolve_model("mine")
    with pytest.raises(ModelFileError, match="no default model is installed"):
        resolve_model("default")


def test_the_daemon_name_of_what_a_user_typed(home: Path, tmp_path: Path) -> None:
    mine = save_tiny(home, "mine")
    assert daemon_model_name("mine") == "mine"
    assert daemon_model_name("mine.safetensors") == "mine"
    assert daemon_model_name(mine) == "mine"
    assert daemon_model_name("default") == "default"
    assert daemon_model_name(default_model.PACKAGED_MODEL) == "default"
    # A name the folder does not hold yet is the daemon's to judge (it may appear meanwhile).
    assert daemon_model_name("later") == "later"
    outside = save_tiny(tmp_path, "outside")
    with pytest.raises(ModelFileError, match="serves only the models in its folder"):
        daemon_model_name(outside)


def test_folder_listing_reads_headers_and_names_broken_files(home: Path) -> None:
    save_tiny(home, "mine")
    (home / "models" / "broken.safetensors").write_bytes(b"not a model")
    models = {m["name"]: m for m in folder_models()}
    assert sorted(models) == ["broken", "default", "mine"]
    assert models["default"]["default"] and models["default"]["builtin"]
    assert models["mine"]["metadata"]["width"] == 0.125 and models["mine"]["error"] is None
    assert (
        models["broken"]["metadata"] is None and "broken.safetensors" in models["broken"]["error"]
    )
    lines = format_models(list(models.values()))
    assert any(line.startswith("  broken  0.0 MB  CANNOT BE USED: ") for line in lines)
    assert any(line.startswith("* default  ") and line.endswith("(built-in)") for line in lines)
    assert format_models([]) == ["no models (put .safetensors files in the model folder)"]


def test_glcic_models_lists_the_folder_without_a_daemon(home: Path, capsys) -> None:
    save_tiny(home, "mine")
    assert cli.main(["models", "--folder"]) == 0
    assert capsys.readouterr().out == f"{home / 'models'}\n"
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"model folder: {home / 'models'}"
    assert lines[1].startswith("* default  ") and "(built-in)" in lines[1]
    assert any(line.startswith("  mine  ") and "width 0.125" in line for line in lines)


def test_glcic_daemon_models_falls_back_to_the_folder(home: Path, capsys) -> None:
    save_tiny(home, "mine")
    assert daemon_cli.main(["models"]) == 0
    captured = capsys.readouterr()
    assert "the daemon is not running; listing the model folder" in captured.err
    assert any(line.startswith("  mine  ") for line in captured.out.splitlines())


def test_glcic_info_takes_a_name_and_default(home: Path, capsys) -> None:
    mine = save_tiny(home, "mine")
    assert cli.main(["info", "mine", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == str(mine)
    assert cli.main(["info", "default", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == str(default_model.PACKAGED_MODEL)
    assert cli.main(["info", "nosuch"]) == 2
    assert capsys.readouterr().err.startswith(
        "glcic: error: no model file or model named 'nosuch'; available: default (built-in), mine"
    )


def test_glcic_complete_takes_a_name(home: Path, tmp_path: Path, photo, capsys, keep_threads):
    save_tiny(home, "mine")
    image, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(photo).save(image)
    hole = np.zeros(photo.shape[:2], np.uint8)
    hole[80:120, 100:150] = 255
    Image.fromarray(hole).save(mask)
    out = tmp_path / "out.png"
    assert cli.main(["complete", str(image), str(mask), str(out), "--model", "mine"]) == 0
    assert out.is_file()
    assert cli.main(["complete", str(image), str(mask), str(out), "--model", "nosuch"]) == 2
    assert "no model file or model named 'nosuch'" in capsys.readouterr().err


def test_glcic_eval_takes_names(home: Path, tmp_path: Path, photo, capsys, keep_threads) -> None:
    save_tiny(home, "mine")
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(photo).save(images / "one.png")
    argv = ["--images", str(images), "--boxes", "--out", str(tmp_path / "out"), "--model", "mine"]
    assert eval_cli.main(argv) == 0
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["arguments"]["models"] == [str(home / "models" / "mine.safetensors")]
    assert eval_cli.main([*argv, "--model", "nosuch"]) == 2
    assert "glcic-eval: error: no model file or model named 'nosuch'" in capsys.readouterr().err


def test_python_users_get_the_same_rule(home: Path) -> None:
    import glcic

    mine = save_tiny(home, "mine")
    assert glcic.load_model(glcic.resolve_model("mine")).metadata.width == 0.125
    assert glcic.resolve_model("default") == default_model.PACKAGED_MODEL
    assert glcic.resolve_model(mine) == mine
