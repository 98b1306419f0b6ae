"""The GIMP 3 plug-in in a real GIMP 3, and its installer.

Debian 12 only packages GIMP 2.10, so GIMP 3 runs from a Debian 13 root folder that
.ci/gimp3-root.sh builds and caches (GLCIC_GIMP_ROOT, else /var/cache/glcic/gimp3-root). The
plug-in is installed with `glcic-daemon install-plugin gimp` into a fresh GIMP user folder in
this test's own folder, which tests/gimp/run_in_root.sh mounts into the root (with /dev, /proc
and an empty /tmp) inside a private mount namespace, so the cached root is never written and
nothing stays mounted. There `gimp-console-3.0` runs tests/gimp/drive.py in batch mode: it
builds images, paints, selects and calls the plug-in's procedure through the PDB, against a real
daemon on loopback (the root shares the network) serving two tiny models, "tiny" (its default)
and "tiny-b". GIMP runs twice: once with the daemon for every completion and refusal, once after
stopping it.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.daemon import save_tiny, tiny_daemon
from support.hosts import (
    debian13_root,
    driver_results,
    require_host,
    root_env,
    root_namespace,
    virtual_display,
)
from support.models import make_tiny_model

from glcic import complete
from glcic.daemon import discovery, install_gimp, protocol
from glcic.daemon.plugin_install import python_can_import

REPO = Path(__file__).resolve().parents[1]
DRIVER = Path(__file__).parent / "gimp" / "drive.py"
RUNNER = Path(__file__).parent / "gimp" / "run_in_root.sh"
#: Where the test's folder appears inside the root (the runner mounts a tmpfs on its /tmp).
INSIDE = "/tmp/glcic-test"
GIMP_TIMEOUT_S = 150
PROCEDURE = "plug-in-glcic-content-aware-complete"
FILL = "Content-aware fill"
WIDTH, HEIGHT = 160, 120
#: The completions drive.py runs, in its order, and the daemon model each must have used.
MODELS = {
    "rgba8_rectangle": "tiny",
    "rgbaf32_feathered": "tiny",
    "gray16_feathered_in_group": "tiny",
    "rgba8_model_b": "tiny-b",  # chosen by the procedure's "model" argument
    "rgba8_interactive": "tiny-b",  # the first interactive run keeps the argument given ...
    "rgba8_last_values": "tiny-b",  # ... and "repeat" (WITH_LAST_VALS) gets it back
    "rgba8_mask_selected": "tiny",
}
COMPLETED = list(MODELS)
#: The seed each daemon model was made with (support.models.make_tiny_model).
SEEDS = {"tiny": 0, "tiny-b": 1}
PLUGIN_DIR = REPO / "plugins" / "gimp" / "glcic_complete"
#: The test-only plug-in that opens glcic's dialog and answers it (see its docstring).
PROBE = Path(__file__).parent / "gimp" / "glcic_dialog_probe" / "glcic_dialog_probe.py"
PROBE_RESULTS = "probe.json"


# -- running GIMP 3 in its root folder -------------------------------------------------------


def gimp_available(root: Path) -> bool:
    if not (root / ".glcic-ready").is_file() or not (root / "usr/bin/gimp-console-3.0").exists():
        return False
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        [*root_namespace(), "chroot", str(root), "/bin/true"],
        capture_output=True, env=root_env(), timeout=60, check=False,
    )  # fmt: skip
    return probe.returncode == 0


def run_gimp(
    root: Path, work: Path, scenarios: str, display: str | None = None
) -> tuple[dict, str]:
    """Run the driver in one gimp-console; returns its results and GIMP's output. With a
    `display` (an X screen, reached from the root through the shared network namespace's
    abstract socket), plug-ins can open windows and the driver runs the dialog probe."""
    results = work / f"results-{scenarios}.json"
    screen = [f"DISPLAY={display}", f"GLCIC_PROBE_RESULTS={INSIDE}/{PROBE_RESULTS}"]
    inside = [
        "/usr/bin/env", "-i", f"HOME={INSIDE}/home", "PATH=/usr/bin:/bin", "LANG=C.UTF-8",
        f"GLCIC_HOME={INSIDE}/glcic", f"GLCIC_TEST_RESULTS={INSIDE}/{results.name}",
        f"GLCIC_GIMP_SCENARIOS={scenarios}", *(screen if display else []),
        "timeout", "-k", "10", str(GIMP_TIMEOUT_S),
        "gimp-console-3.0", "-i", "--batch-interpreter", "python-fu-eval",
        "-b", f"exec(open('{INSIDE}/drive.py').read())", "--quit",
    ]  # fmt: skip
    try:
        run = subprocess.run(
            [*root_namespace(), "bash", str(RUNNER), str(root), str(work), INSIDE, *inside],
            capture_output=True, text=True, env=root_env(), timeout=GIMP_TIMEOUT_S + 60,
        )  # fmt: skip
        output = run.stdout + run.stderr
    except subprocess.TimeoutExpired as expired:
        output = f"GIMP did not finish in {GIMP_TIMEOUT_S} s: {expired}"
    return driver_results(results, "GIMP", output[-6000:]), output


def install_plugin(plugins: Path, home: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "GIMP"))}
    env["HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "glcic.daemon.cli", "install-plugin", "gimp", "--dest",
         str(plugins)],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def gimp(tmp_path_factory) -> dict:
    """Install the plug-in for a fresh GIMP user, run GIMP with a daemon, then without one."""
    root = debian13_root()
    require_host(
        gimp_available(root),
        f"GIMP 3 (the root folder .ci/gimp3-root.sh builds, here {root}, entered with unshare)",
    )
    work = tmp_path_factory.mktemp("gimp")
    plugins = work / "home" / ".config" / "GIMP" / "3.0" / "plug-ins"
    installed = install_plugin(plugins, work / "home")
    assert installed.returncode in (0, 1) and (plugins / "glcic_complete").is_dir(), (
        installed.stderr
    )
    shutil.copy(DRIVER, work / "drive.py")
    probe = plugins / PROBE.parent.name / PROBE.name
    probe.parent.mkdir()
    shutil.copy(PROBE, probe)
    probe.chmod(0o755)  # GIMP runs only executable plug-ins
    save_tiny(work / "glcic", "tiny-b", seed=SEEDS["tiny-b"])
    with tiny_daemon(work / "glcic") as daemon:
        with_daemon, output = run_gimp(root, work, "daemon")
        log = daemon.log()
    if shutil.which("Xvfb"):
        with virtual_display() as display:
            without, output_without = run_gimp(root, work, "no_daemon", display)
    else:
        without, output_without = run_gimp(root, work, "no_daemon")
    probe_results = work / PROBE_RESULTS
    return {
        "results": with_daemon,
        "output": output,
        "no_daemon": without,
        "output_no_daemon": output_without,
        "probe": json.loads(probe_results.read_text()) if probe_results.exists() else None,
        "daemon_log": log,
        "pluginrc": (work / "home" / ".config" / "GIMP" / "3.0" / "pluginrc").read_text(
            errors="replace"
        ),
    }


def _array(text: str, channels: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.frombuffer(base64.b64decode(text), np.uint8).reshape(shape)


def _box(mask: np.ndarray) -> list[int]:
    rows, columns = np.nonzero(mask)
    x0, y0 = int(columns.min()), int(rows.min())
    return [x0, y0, int(columns.max()) + 1 - x0, int(rows.max()) + 1 - y0]


# -- in real GIMP 3 ---------------------------------------------------------------------------


@pytest.mark.slow
def test_procedure_is_registered_under_filters_for_one_drawable(gimp) -> None:
    procedure = gimp["results"]["procedure"]
    assert procedure["label"] == "Content-aware complete"
    assert procedure["menu_paths"] == ["<Image>/Filters/Enhance"]
    assert procedure["image_types"] == "RGB*, GRAY*"
    # What GIMP itself recorded when it registered the plug-in from the user's folder; libgimp's
    # proxy of another plug-in's procedure does not carry the sensitivity mask.
    definition = re.search(
        r'\(plug-in-def "\$\{gimp_dir\}/plug-ins/glcic_complete/glcic_complete\.py" \d+\s+'
        rf'\(proc-def "{PROCEDURE}".*?"RGB\*, GRAY\*"\s+(\d+)',
        gimp["pluginrc"],
        re.DOTALL,
    )
    assert definition is not None, "GIMP did not register the plug-in from its user folder"
    assert int(definition.group(1)) == procedure["drawable_only"]  # sensitive to one drawable
    # Scripts choose the model by name; empty means the daemon's default.
    assert procedure["arguments"] == ["run-mode", "image", "drawables", "model"]
    assert procedure["model_default"] == "" and procedure["model_type"] == "gchararray"


@pytest.mark.slow
@pytest.mark.parametrize("scenario", COMPLETED)
def test_completion_adds_one_layer_directly_above_the_source(gimp, scenario) -> None:
    entry = gimp["results"]["scenarios"][scenario]
    assert entry["status"] == "success", str(entry["message"]) + gimp["daemon_log"][-2000:]
    before, after = entry["layers_before"], entry["layers_after"]
    if scenario.endswith("_in_group"):
        assert before == [["group", ["top", "paint", "below"]], "Background"]
        assert after == [["group", ["top", FILL, "paint", "below"]], "Background"]
        assert entry["fill_parent"] == "group"
    else:
        assert before == ["top", "paint", "Background"]
        assert after == ["top", FILL, "paint", "Background"]
        assert entry["fill_parent"] is None
    assert entry["fill_position"] + 1 == entry["paint_position"]
    assert entry["original_unchanged"]  # the source layer's stored bytes, all of them
    # The source stays selected (its mask, when that was), ready for the next completion.
    assert entry["selected_after"] == entry["selected_before"]
    assert entry["selected_before"] == (["paint mask"] if "mask" in scenario else ["paint"])
    assert entry["fill_mode"] == "normal" and entry["fill_opacity"] == 100.0
    assert entry["fill_has_alpha"]
    # The image's own precision and model, with alpha: babl converted the 8-bit fill into it.
    expected_format = {
        "R'G'B'A u8": "R'G'B'A u8",
        "RGBA float": "RGBA float",
        "YA u16": "YA u16",
    }[entry["image_format"]]
    assert entry["fill_format"] == expected_format
    assert entry["fill_is_gray"] == scenario.startswith("gray")


@pytest.mark.slow
@pytest.mark.parametrize("scenario", COMPLETED)
def test_fill_is_inside_the_selection_only_with_its_soft_edges(gimp, scenario) -> None:
    entry = gimp["results"]["scenarios"][scenario]
    fill = _array(entry["fill_rgba8"], 4)
    selection = _array(entry["selection"], 1)
    outside = selection == 0
    assert outside.any() and not fill[outside].any()  # fully transparent (and black) outside
    assert np.array_equal(fill[..., 3], selection)  # the selection is the alpha, exactly
    assert entry["fill_rect"] == _box(selection)  # the layer covers the selection, no more
    x, y, width, height = entry["fill_rect"]
    stored = np.frombuffer(base64.b64decode(entry["fill_native"]), np.uint8)
    stored = stored.reshape(height, width, -1)
    assert not stored[outside[y : y + height, x : x + width]].any()  # zero in its own format
    inside = selection == 255
    assert inside.sum() > 500
    assert fill[inside][:, :3].astype(np.float64).std(axis=0).min() > 0, "nothing was completed"
    if "feathered" in scenario:
        soft = (selection > 0) & (selection < 255)
        assert soft.sum() > 100, "the feathered selection lost its soft edge"


@pytest.mark.slow
@pytest.mark.parametrize("scenario", COMPLETED)
def test_fill_is_the_networks_completion_of_the_layer_as_placed(gimp, scenario) -> None:
    """The pixels the plug-in sent (the layer read through its offsets, transparent off the
    layer) and what it did with the answer: the same completion, computed here in-process."""
    entry = gimp["results"]["scenarios"][scenario]
    paint = _array(entry["paint_rgba8"], 4)
    # The layer (140x110 at 6,-4) as the image sees it: transparent where it does not reach.
    assert not paint[:, :6].any() and not paint[106:].any() and paint[:106, 6:146, 3].all()
    selection = _array(entry["selection"], 1)
    hole = np.where(selection > 0, 255, 0).astype(np.uint8)
    seed = SEEDS[MODELS[scenario]]  # the model that scenario chose
    expected = complete(np.ascontiguousarray(paint), hole, make_tiny_model(seed))
    fill = _array(entry["fill_rgba8"], 4).astype(np.int32)
    inside = selection > 0
    if scenario.startswith("gray"):
        # babl stores gray as luminance: compare with the luminance of the colour fill.
        linear = _to_linear(expected[..., :3].astype(np.float64) / 255)
        luminance = _to_srgb(linear @ np.array([0.2225, 0.7169, 0.0606])) * 255
        assert np.abs(fill[inside][:, 0] - luminance[inside]).max() <= 1
        assert (fill[..., 0] == fill[..., 1]).all() and (fill[..., 1] == fill[..., 2]).all()
    else:  # 8-bit to the layer's precision and back is exact, 32-bit float included
        assert np.array_equal(fill[inside][:, :3], expected[inside][:, :3])


def _to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _to_srgb(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * v ** (1 / 2.4) - 0.055)


@pytest.mark.slow
def test_the_model_chosen_is_the_model_that_runs(gimp) -> None:
    """The daemon names the model of each completion it served, in the order drive.py asked."""
    served = re.findall(r"completed \w+: \d+x\d+, model ([\w.-]+)", gimp["daemon_log"])
    assert served == list(MODELS.values()), gimp["daemon_log"][-3000:]
    # Same image, same selection: the other model's fill differs. (Only slightly: two tiny
    # random networks under the same Poisson blend; each fill is checked exactly against its
    # own model in test_fill_is_the_networks_completion_of_the_layer_as_placed.)
    scenarios = gimp["results"]["scenarios"]
    chosen, default = scenarios["rgba8_model_b"], scenarios["rgba8_rectangle"]
    assert chosen["selection"] == default["selection"]
    inside = _array(default["selection"], 1) > 0
    differs = _array(chosen["fill_rgba8"], 4)[inside] != _array(default["fill_rgba8"], 4)[inside]
    assert differs.any(axis=1).mean() > 0.5


@pytest.mark.slow
def test_clean_runs_print_no_warnings_from_the_plugin(gimp) -> None:
    """GIMP's output, through completions, refusals and runs without a daemon, holds nothing
    from the plug-in's process: every GLib message it prints (LibGimp's "gimp_flush(): error:
    Broken pipe" included) carries its program name, and Python's warnings and tracebacks its
    file's path. (GIMP's own noise, e.g. its python-eval's identical warning, is not ours.)"""
    for output in (gimp["output"], gimp["output_no_daemon"]):
        ours = [
            line for line in output.splitlines()
            if "glcic_complete" in line or "glcic-completion" in line  # program, thread
        ]  # fmt: skip
        assert ours == [], "\n".join(ours)
    # Both runs did run the plug-in: successes, and errors without a daemon.
    assert gimp["results"]["scenarios"]["rgba8_rectangle"]["status"] == "success"
    assert gimp["no_daemon"]["scenarios"]["no_daemon"]["status"] == "execution-error"


@pytest.mark.slow
def test_dialog_offers_the_daemons_models_and_sets_the_model_argument(gimp) -> None:
    """glcic's real dialog on a virtual screen, answered by tests/gimp/glcic_dialog_probe for
    a daemon with the models default, tiny (its default) and tiny-b."""
    probe = gimp["probe"]
    require_host(probe is not None, "Xvfb (a virtual screen for GIMP's dialogs)")
    assert "error" not in probe, probe.get("error")
    rows = [["", "The daemon's default (tiny)"], ["default", "default"], ["tiny", "tiny"],
            ["tiny-b", "tiny-b"]]  # fmt: skip
    for case in probe.values():
        assert case["can_show_dialogs"] and case["combos"] == 1 and case["rows"] == rows
        assert case["frames"] == ["Completion"] and "Model:" in case["labels"]
    first = probe["first_use"]  # nothing remembered: the daemon's default; the user picks
    assert first["active_before"] == "" and first["returned"] is True
    assert first["model_after"] == "tiny-b"
    remembered = probe["remembered"]  # libgimp restored the last choice: it is selected
    assert remembered["active_before"] == "tiny-b" and remembered["model_after"] == "tiny-b"
    gone = probe["remembered_gone"]  # no longer in the daemon's folder: default, and a note
    assert gone["active_before"] == "" and gone["model_after"] == ""
    assert any('"deleted"' in label for label in gone["labels"])
    assert probe["cancelled"]["returned"] is False
    for case in probe.values():
        assert "error" not in case, case["error"]
    # The dialog code printed nothing (GTK's messages would carry the probe's program name).
    # Not the dialog's: GIMP's own dialog asking gimp-console for a window to stay above (it
    # has none), and libgimp's "Broken pipe" on the way out, which the probe, unlike
    # glcic_complete (see its do_quit), does not avoid.
    known = ("gimp_window_transient_on_mapped", "gimp_flush(): error: Broken pipe")
    printed = [
        line
        for line in gimp["output_no_daemon"].splitlines()
        if "glcic_dialog_probe" in line and not any(text in line for text in known)
    ]
    assert printed == [], "\n".join(printed)
    # An interactive run with a screen but no daemon says so before any dialog opens.
    entry = gimp["no_daemon"]["scenarios"]["no_daemon_interactive"]
    assert entry["status"] == "execution-error" and "not running" in entry["message"]
    assert entry["layers_after"] == entry["layers_before"]


@pytest.mark.slow
def test_layer_is_added_in_one_closed_undo_group(gimp) -> None:
    """GIMP 3.0 has no undo call for plug-ins or batch scripts, so this checks what can be seen:
    undo stays enabled on the image, the change went through the undo system (the image is
    dirty again after clean_all), and GIMP did not have to close an undo group the plug-in
    left open (it says so when it does)."""
    for scenario in COMPLETED:
        entry = gimp["results"]["scenarios"][scenario]
        assert entry["undo_enabled"] and entry["dirty"], scenario
    assert "left image undo in inconsistent state" not in gimp["output"]
    source = (REPO / "plugins" / "gimp" / "glcic_complete" / "glcic_complete.py").read_text()
    assert source.count("undo_group_start()") == source.count("undo_group_end()") == 1


@pytest.mark.slow
def test_refusals_explain_themselves_and_change_nothing(gimp) -> None:
    scenarios = {**gimp["results"]["scenarios"], **gimp["no_daemon"]["scenarios"]}
    outputs = {key: gimp["output_no_daemon"] for key in gimp["no_daemon"]["scenarios"]}
    expectations = {
        "empty_selection": ["The selection is empty", "Select the region to fill"],
        "channel": ["select a layer"],
        "two_layers": ["one layer at a time"],
        "no_daemon": ["not running", "glcic-daemon start"],
        "no_daemon_model": ["not running", "glcic-daemon start"],  # asking for the model list
        "version_mismatch": ["different versions", "install-plugin gimp"],
        # A script's unknown model: the models the daemon does have, named.
        "unknown_model": ['no model named "no-such-model"', "Its models are: default, "
                          "tiny (the daemon's default), tiny-b.", '"model" argument'],
    }  # fmt: skip
    for key, words in expectations.items():
        entry = scenarios[key]
        assert entry["status"] == "execution-error", key
        for word in words:
            assert word in entry["message"], (key, entry["message"])
        assert entry["layers_after"] == entry["layers_before"], key
        assert entry["original_unchanged"] and not entry["dirty"], key  # the image untouched
        # GIMP shows the returned words itself, once per refusal.
        first_line = entry["message"].splitlines()[0]
        output = outputs.get(key, gimp["output"])
        same = [k for k, v in scenarios.items() if v.get("message")
                and outputs.get(k, gimp["output"]) is output
                and v["message"].splitlines()[0] == first_line]  # fmt: skip
        assert output.count(first_line) == len(same), key
    for key in ("no_daemon", "no_daemon_model"):
        assert scenarios[key]["message"].lower().count("not running") == 1


# -- the installer (no GIMP needed) ---------------------------------------------------------


def test_install_gimp_puts_the_plugin_folder_in_place(tmp_path) -> None:
    plugins = tmp_path / "somewhere" / "plug-ins"
    for _ in range(2):  # installing again replaces the previous install
        result = install_plugin(plugins, tmp_path)
        assert "Traceback" not in result.stderr
    folder = plugins / "glcic_complete"
    main = folder / "glcic_complete.py"
    assert {p.name for p in folder.iterdir()} == {
        "glcic_complete.py", "glcic_gimp_models.py", "glcic_gimp_dialog.py", "glcic_client.py",
        "glcic_discovery.py", "glcic_plugin_common.py"
    }  # fmt: skip
    assert main.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH) == 0o111
    assert main.read_text().startswith("#!/usr/bin/env python3\n")
    assert (folder / "glcic_client.py").read_bytes() == Path(protocol.__file__).read_bytes()
    assert (folder / "glcic_discovery.py").read_bytes() == Path(discovery.__file__).read_bytes()
    common = REPO / "plugins" / "shared" / "glcic_plugin_common.py"
    assert (folder / "glcic_plugin_common.py").read_bytes() == common.read_bytes()
    assert [p.name for p in plugins.iterdir()] == ["glcic_complete"]  # no staging leftovers
    assert f"installed {folder}" in result.stdout
    assert "Filters > Enhance > Content-aware complete" in result.stdout
    if python_can_import(install_gimp.system_python()):
        assert result.returncode == 0, result.stderr
    else:  # the plug-in is in place, and the user is told what GIMP's Python lacks
        assert result.returncode == 1 and "python3-zmq python3-msgpack" in result.stderr


def test_install_gimp_defaults_to_gimps_user_folder(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "GIMP"))}
    variants = {
        "home": ({"HOME": str(tmp_path / "a")}, tmp_path / "a" / ".config"),
        "xdg": ({"HOME": str(tmp_path / "b"), "XDG_CONFIG_HOME": str(tmp_path / "xdg")},
                tmp_path / "xdg"),
    }  # fmt: skip
    for extra, config in variants.values():
        result = subprocess.run(
            [sys.executable, "-m", "glcic.daemon.cli", "install-plugin", "gimp"],
            capture_output=True, text=True, env={**env, **extra}, timeout=120,
        )  # fmt: skip
        assert "Traceback" not in result.stderr
        folder = config / "GIMP" / "3.0" / "plug-ins" / "glcic_complete"
        assert (folder / "glcic_complete.py").is_file()


def test_gimp_plugins_dir_on_each_system(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("GIMP3_DIRECTORY", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
    expected = {
        "linux": tmp_path / ".config" / "GIMP" / "3.0" / "plug-ins",
        "win32": tmp_path / "Roaming" / "GIMP" / "3.0" / "plug-ins",
        "darwin": tmp_path / "Library" / "Application Support" / "GIMP" / "3.0" / "plug-ins",
    }
    for platform, folder in expected.items():
        monkeypatch.setattr(sys, "platform", platform)
        assert install_gimp.gimp_plugins_dir() == folder
    monkeypatch.setenv("GIMP3_DIRECTORY", str(tmp_path / "custom"))
    assert install_gimp.gimp_plugins_dir() == tmp_path / "custom" / "plug-ins"


def test_bundled_python_is_read_from_the_gimp_install(tmp_path) -> None:
    first, second = tmp_path / "GIMP 3", tmp_path / "GIMP.app" / "Contents" / "Resources"
    for folder in ("python3.9", "python3.12", "python3.x"):
        (second / "lib" / folder).mkdir(parents=True)
    assert install_gimp.bundled_python_version([first, second]) == "3.12"
    assert install_gimp.bundled_python_version([first]) is None


def test_install_for_a_bundled_python_vendors_the_client_requirements(
    tmp_path, monkeypatch
) -> None:
    calls = []

    def vendor(target: Path, version: str) -> list[str]:
        # Wheels go into the staging copy, before it replaces the installed plug-in.
        assert target.parts[-2:] == ("glcic_complete", "vendor")
        assert target.parent.parent.name.startswith(".glcic_complete.")
        (target / "zmq").mkdir(parents=True)
        calls.append((target.parent.parent.parent / "glcic_complete" / "vendor", version))
        return ["pyzmq.whl", "msgpack.whl"]

    monkeypatch.setattr(install_gimp, "vendor_client_requirements", vendor)
    report = install_gimp.install(tmp_path / "explicit", "3.11")
    assert calls == [(tmp_path / "explicit" / "glcic_complete" / "vendor", "3.11")]
    assert (calls[0][0] / "zmq").is_dir()  # the unpacked modules arrived with the swap
    assert any("Python 3.11" in note for note in report.notes) and not report.problems

    # Windows: GIMP's own Python version is read from its install folder.
    gimp_dir = tmp_path / "Programs" / "GIMP 3"
    (gimp_dir / "lib" / "python3.12").mkdir(parents=True)
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(install_gimp, "gimp_install_dirs", lambda: [gimp_dir])
    install_gimp.install(tmp_path / "windows", None)
    assert calls[-1] == (tmp_path / "windows" / "glcic_complete" / "vendor", "3.12")
    monkeypatch.setattr(install_gimp, "gimp_install_dirs", lambda: [])
    report = install_gimp.install(tmp_path / "unknown", None)
    assert calls[-1][1] == install_gimp.BUNDLED_PYTHON
    assert any("--python" in note for note in report.notes)


# -- the model's rules (no GIMP needed) ---------------------------------------------------------


def _models_module():
    """The plug-in's glcic_gimp_models, loaded from its file as GIMP's Python loads it."""
    spec = importlib.util.spec_from_file_location(
        "glcic_gimp_models", PLUGIN_DIR / "glcic_gimp_models.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


NAMES, DEFAULT = ["default", "mine", "tiny"], "tiny"


def test_dialog_lists_the_daemons_models_after_its_default() -> None:
    models = _models_module()
    choices = models.model_choices(NAMES, DEFAULT, "")
    assert choices.rows == [
        ("", "The daemon's default (tiny)"), ("default", "default"), ("mine", "mine"),
        ("tiny", "tiny"),
    ]  # fmt: skip
    assert choices.active == "" and choices.note is None  # first use: the daemon's default


def test_dialog_selects_the_remembered_model() -> None:
    models = _models_module()
    choices = models.model_choices(NAMES, DEFAULT, "mine")
    assert choices.active == "mine" and choices.note is None


def test_dialog_says_when_the_remembered_model_is_gone() -> None:
    models = _models_module()
    choices = models.model_choices(NAMES, DEFAULT, "deleted")
    assert choices.active == ""
    assert '"deleted"' in choices.note and "the daemon's default is selected" in choices.note
    # A daemon without a default: the first model instead, and no row for a missing default.
    choices = models.model_choices(["a", "b"], None, "deleted")
    assert choices.rows == [("a", "a"), ("b", "b")]
    assert choices.active == "a" and '"a" is selected' in choices.note


def test_model_names_are_checked_against_the_daemons_list() -> None:
    models = _models_module()
    assert models.model_problem("", NAMES, DEFAULT) is None
    assert models.model_problem("mine", NAMES, DEFAULT) is None
    unknown = models.model_problem("Mine", NAMES, DEFAULT)  # names are exact
    assert unknown is not None
    assert 'no model named "Mine"' in unknown
    assert "Its models are: default, mine, tiny (the daemon's default)." in unknown
    no_default = models.model_problem("", NAMES, None)
    assert no_default is not None and "no default model" in no_default and "mine" in no_default
    nothing = models.model_problem("", [], None)
    assert nothing is not None and "glcic-daemon models" in nothing
