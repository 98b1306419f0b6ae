"""daemon_models(), which the hosts' model choosers (Krita's settings dialog, GIMP's procedure
argument) are filled from, against a real daemon: its names and its default, a file that cannot
be loaded left out, and a daemon that is not running raised as the error the hosts word."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from support.daemon import save_tiny, tiny_daemon

from glcic.daemon import protocol

COMMON = Path(__file__).resolve().parents[1] / "plugins" / "shared" / "glcic_plugin_common.py"


def _common():
    """The shared plugin module as a plugin imports it: beside `glcic_client`."""
    sys.modules.setdefault("glcic_client", protocol)
    spec = importlib.util.spec_from_file_location("glcic_plugin_common", COMMON)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_daemon_models_lists_what_can_be_chosen_and_the_default(tmp_path, monkeypatch) -> None:
    common = _common()
    home = tmp_path / "glcic"
    save_tiny(home, "other", seed=1)
    (home / "models" / "broken.safetensors").write_bytes(b"not a model at all")
    monkeypatch.setenv("GLCIC_HOME", str(home))
    monkeypatch.delenv("GLCIC_CONNECTION_FILE", raising=False)
    with tiny_daemon(home) as daemon:
        names, default = common.daemon_models()
        with daemon.client() as client:
            listed = {entry["name"]: entry for entry in client.models()}
    assert default == "tiny"
    assert {"tiny", "other"} <= set(names)
    # The daemon lists the unloadable file with what went wrong; it cannot be chosen.
    assert listed["broken"]["error"] and not listed["broken"]["loaded"]
    assert "broken" not in names


def test_daemon_models_raises_the_error_hosts_describe(tmp_path, monkeypatch) -> None:
    common = _common()
    monkeypatch.setenv("GLCIC_HOME", str(tmp_path / "nobody"))
    monkeypatch.delenv("GLCIC_CONNECTION_FILE", raising=False)
    with pytest.raises(protocol.DaemonNotRunning) as raised:
        common.daemon_models(timeout=1.0)
    words = common.describe_client_error(raised.value, "krita")
    assert words.startswith("The glcic completion daemon is not running.")
