"""Per-user folders: GLCIC_HOME, and the client finding the daemon where the daemon writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from glcic import paths
from glcic.daemon import client


def test_glcic_home_replaces_every_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path))
    assert paths.models_dir() == tmp_path / "models"
    assert paths.runtime_dir() == tmp_path / "run"
    assert paths.log_dir() == tmp_path / "logs"
    assert paths.config_dir() == tmp_path / "config"
    assert client.default_connection_file() == tmp_path / "run" / "daemon.json"


@pytest.mark.skipif(os.name != "posix" or not hasattr(os, "getuid"), reason="XDG rules")
def test_client_rule_without_platformdirs_matches_the_daemon(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("GLCIC_HOME", raising=False)
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert client.default_runtime_dir() == paths.runtime_dir() == runtime / "glcic"
    assert client._runtime_dir_without_platformdirs() == paths.runtime_dir()
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert client.default_runtime_dir() == paths.runtime_dir()
    if not Path(f"/run/user/{os.getuid()}").is_dir():
        monkeypatch.setenv("TMPDIR", "/tmp")
        assert client._runtime_dir_without_platformdirs() == paths.runtime_dir()


def test_connection_file_override(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GLCIC_CONNECTION_FILE", str(tmp_path / "elsewhere.json"))
    assert client.default_connection_file() == tmp_path / "elsewhere.json"
