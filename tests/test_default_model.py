"""Which model runs when the user names none: the user's own `default`, else the packaged one."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.daemon import save_tiny

from glcic import default_model
from glcic.errors import ModelFileError


def test_a_default_in_the_model_directory_wins(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path))
    packaged = tmp_path / "package" / "default.safetensors"
    packaged.parent.mkdir()
    packaged.write_bytes(b"stands in for the packaged file")
    monkeypatch.setattr(default_model, "PACKAGED_MODEL", packaged)
    assert default_model.default_model_path() == packaged
    own = save_tiny(tmp_path, "default")
    assert default_model.default_model_path() == own


def test_no_default_anywhere_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path))
    monkeypatch.setattr(default_model, "PACKAGED_MODEL", tmp_path / "absent.safetensors")
    with pytest.raises(ModelFileError, match="--model PATH"):
        default_model.default_model_path()
