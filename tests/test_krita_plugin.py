"""The Krita plugin in a real Krita: installed with install-plugin, driven through its registered
action against a real daemon, in the full Krita under a virtual X screen (kritarunner has no
window, hence no actions and no undo). One Krita run covers every scenario; see
tests/krita/glcic_test_driver for what it does there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
from support.daemon import tiny_daemon
from support.hosts import require_host
from support.krita_harness import (
    DRIVER,
    KRITA_TIMEOUT_S,
    host_env,
    install_plugin,
    krita_available,
    run_driver,
)

WIDTH, HEIGHT = 160, 120
FILL = "Content-aware fill"


@pytest.fixture(scope="module")
def krita_run(tmp_path_factory) -> dict:
    """Start a daemon, install the plugin and the driver for a fresh user, run Krita once."""
    require_host(
        krita_available(),
        "Krita and Xvfb (apt-get install krita xvfb python3-pyqt5 python3-zmq python3-msgpack)",
    )
    root = tmp_path_factory.mktemp("krita")
    glcic_home = root / "glcic"
    with tiny_daemon(glcic_home) as daemon:
        document = run_driver(root, glcic_home)
        document["daemon_log"] = daemon.log()
        return document


#: (numpy type, channels, alpha channel, fully opaque) of Krita's pixel data per colour space.
LAYOUTS = {
    ("RGBA", "U8"): (np.uint8, 4, 3, 255),
    ("RGBA", "U16"): (np.uint16, 4, 3, 65535),
    ("RGBA", "F32"): (np.float32, 4, 3, 1.0),
    ("GRAYA", "U8"): (np.uint8, 2, 1, 255),
}
COMPLETED = ["rgba8_rectangle", "rgba16_feathered", "rgbaf32_feathered", "graya8_rectangle"]


def _fill(entry: dict) -> tuple[np.ndarray, np.ndarray, int, float]:
    """The fill layer as HxWxC in Krita's layout, the selection, the alpha channel, opaque."""
    dtype, channels, alpha, opaque = LAYOUTS[tuple(entry["fill_space"][:2])]
    raw = bytes.fromhex(entry["fill_pixels"])
    fill = np.frombuffer(raw, dtype).reshape(HEIGHT, WIDTH, channels)
    selection = np.frombuffer(bytes.fromhex(entry["selection"]), np.uint8).reshape(HEIGHT, WIDTH)
    return fill, selection, alpha, opaque


@pytest.mark.slow
@pytest.mark.parametrize("scenario", [*COMPLETED, "after_error"])
def test_completion_adds_one_undoable_layer_above_the_active_one(krita_run, scenario) -> None:
    entry = krita_run["scenarios"][scenario]
    assert entry["outcome"] == "done", entry["message"] + krita_run["daemon_log"][-2000:]
    assert entry["active_before"] == "paint"
    assert entry["layers_before"] == ["Background", "paint", "top"]
    assert entry["layers_after"] == ["Background", "paint", FILL, "top"]
    assert entry["active_after"] == "paint"  # the source stays active for the next fill
    assert entry["original_unchanged"]
    assert entry["layers_after_undo"] == entry["layers_before"]
    assert entry["ui_ticks"] > 0, "Krita's event loop did not run while the daemon worked"


@pytest.mark.slow
@pytest.mark.parametrize("scenario", COMPLETED)
def test_fill_is_inside_the_selection_only_with_its_soft_edges(krita_run, scenario) -> None:
    entry = krita_run["scenarios"][scenario]
    fill, selection, alpha, opaque = _fill(entry)
    # The fill comes back in the document's own colour space, whatever the daemon worked in.
    assert entry["fill_space"] == [entry["model"], entry["depth"], entry["profile"]]
    outside = selection == 0
    assert outside.any() and not fill[outside].any()  # fully transparent (and black) outside
    expected_alpha = selection.astype(np.float64) / 255 * opaque
    assert np.allclose(fill[..., alpha], expected_alpha, rtol=0, atol=opaque * 1e-6)
    inside = selection == 255
    assert inside.sum() > 500
    colours = np.delete(fill[inside], alpha, axis=1).astype(np.float64)
    assert colours.std(axis=0).min() > 0, "the fill is flat: nothing was completed"
    if "feathered" in scenario:
        soft = (selection > 0) & (selection < 255)
        assert soft.sum() > 100, "the feathered selection lost its soft edge"


@pytest.mark.slow
def test_cancelling_adds_nothing(krita_run) -> None:
    entry = krita_run["scenarios"]["cancelled"]
    assert entry["outcome"] == "cancelled"
    assert entry["layers_after"] == entry["layers_before"]
    assert entry["original_unchanged"]


@pytest.mark.slow
def test_refusals_explain_themselves_and_change_nothing(krita_run) -> None:
    scenarios = krita_run["scenarios"]
    expectations = {
        "no_selection": "Select the region to fill",
        "not_a_paint_layer": "paint layer",
        "no_daemon": "glcic-daemon start",
    }
    for key, words in expectations.items():
        entry = scenarios[key]
        assert entry["outcome"] == "error", key
        assert words in entry["message"], (key, entry["message"])
        assert entry["shown"] == [entry["message"]], (key, entry["shown"])
        assert entry["layers_after"] == entry["layers_before"], key
    assert scenarios["no_daemon"]["message"].lower().count("not running") == 1


@pytest.mark.slow
def test_closing_the_image_before_the_fill_arrives_is_explained(krita_run) -> None:
    entry = krita_run["scenarios"]["closed_meanwhile"]
    assert entry["outcome"] == "error"
    assert entry["message"] == "The image was closed before the fill arrived; nothing was added."
    assert entry["shown"] == [entry["message"]]


@pytest.mark.slow
def test_a_source_layer_deleted_meanwhile_still_gets_its_fill_on_top(krita_run) -> None:
    entry = krita_run["scenarios"]["source_removed"]
    assert entry["outcome"] == "done", entry["message"]
    assert entry["layers_after"] == ["Background", "top", "Content-aware fill"]


@pytest.mark.slow
def test_action_has_a_shortcut_that_krita_does_not_use(krita_run) -> None:
    shortcut = krita_run["shortcut"]
    assert shortcut["text"] == "Content-aware complete"
    assert shortcut["shortcut"] == "Ctrl+Alt+Shift+F"
    assert shortcut["clashes"] == []


@pytest.mark.slow
def test_cmyk_goes_through_kritas_colour_engine_headless(tmp_path) -> None:
    """kritarunner (headless Krita): a CMYK layer reaches the daemon as sRGB and the fill comes
    back as CMYK, through Krita's own conversions, leaving no scratch document open."""
    require_host(bool(shutil.which("kritarunner")), "kritarunner (apt-get install krita)")
    env = host_env(tmp_path, tmp_path / "glcic")
    env["QT_QPA_PLATFORM"] = "offscreen"
    pykrita = tmp_path / "pykrita"
    install_plugin(env, pykrita)
    results = tmp_path / "results.json"
    env.update(GLCIC_TEST_RESULTS=str(results), PYTHONPATH=f"{pykrita}{os.pathsep}{DRIVER}")
    run = subprocess.run(
        ["kritarunner", "-s", "kritarunner_checks", "-f", "main"],
        capture_output=True, text=True, env=env, timeout=KRITA_TIMEOUT_S, cwd=tmp_path,
    )  # fmt: skip
    assert results.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    document = json.loads(results.read_text())
    assert "error" not in document, document.get("error")
    cmyk = document["cmyk"]
    assert cmyk["rgba_length"] == 64 * 48 * 4
    assert min(cmyk["white"]) >= 250  # paper white is sRGB white
    red, _, blue, alpha = cmyk["cyan"]
    assert red < 60 and blue > 150 and alpha == 255  # cyan ink is a blue-green in sRGB
    assert cmyk["layers"] == ["Background", "paint", FILL]
    assert cmyk["fill_space"] == ["CMYKA", "U8"]
    assert cmyk["fill_alpha"] == [0, 128, 255, 255] * 2
    assert max(cmyk["fill_white_ink"]) <= 3 and cmyk["fill_cyan_ink"][0] > 128
    assert cmyk["original_unchanged"]
    assert cmyk["open_documents"] == 1
