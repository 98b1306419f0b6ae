#!/usr/bin/env python3
"""A test-only GIMP plug-in that opens glcic's real dialog (glcic_gimp_dialog.ask) on a virtual
screen and plays the user: tests/test_gimp_plugin.py installs it beside glcic_complete in the
test's GIMP profile, and tests/gimp/drive.py calls it when GIMP has a display.

GIMP's dialog cannot be clicked from the batch script (it lives in the plug-in's process), so
this plug-in runs the dialog in its own process instead, with its own procedure carrying the
same "model" argument. A timer inside the dialog's loop records what the dialog shows, picks a
model in the list as a user would (or cancels) and answers the dialog; what ask() returned and
what the procedure's config then holds go to GLCIC_PROBE_RESULTS (a JSON file).
"""

import json
import os
import sys
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import Gimp, GimpUi, GLib, GObject, Gtk  # noqa: E402

PROCEDURE = "plug-in-glcic-dialog-probe"
PLUGIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "glcic_complete")
sys.path.insert(0, PLUGIN)

import glcic_gimp_dialog  # noqa: E402
import glcic_gimp_models  # noqa: E402

NAMES, DEFAULT = ["default", "tiny", "tiny-b"], "tiny"


def widgets(widget):
    """`widget` and everything inside it."""
    yield widget
    if isinstance(widget, Gtk.Container):
        for child in widget.get_children():
            yield from widgets(child)


def the_dialog():
    for window in Gtk.Window.list_toplevels():
        if isinstance(window, GimpUi.ProcedureDialog) and window.get_visible():
            return window
    return None


def play(case: dict, answer: str, pick: str | None) -> bool:
    """Inspect the open dialog, choose `pick` in its model list, then answer it. Whatever
    goes wrong is recorded and the dialog cancelled, so the run never waits on it."""
    dialog = the_dialog()
    if dialog is None:
        return GLib.SOURCE_CONTINUE  # not mapped yet
    response = Gtk.ResponseType.OK if answer == "ok" else Gtk.ResponseType.CANCEL
    try:
        inside = list(widgets(dialog))
        combos = [w for w in inside if isinstance(w, GimpUi.StringComboBox)]
        case["frames"] = [w.get_label() for w in inside if isinstance(w, Gtk.Frame)]
        case["labels"] = [w.get_text() for w in inside if isinstance(w, Gtk.Label)]
        case["combos"] = len(combos)
        if combos:
            combo = combos[0]
            case["rows"] = [[row[0], row[1]] for row in combo.get_model()]
            case["active_before"] = combo.get_active()  # GimpStringComboBox: the active id
            if pick is not None:
                combo.set_active(pick)
    except Exception:
        case["error"] = traceback.format_exc()
        response = Gtk.ResponseType.CANCEL
    dialog.response(response)
    return GLib.SOURCE_REMOVE


def probe(procedure, config) -> dict:
    results = {}
    cases = [
        # (name, remembered model, what the "user" picks, how the dialog is answered)
        ("first_use", "", "tiny-b", "ok"),
        ("remembered", "tiny-b", None, "ok"),
        ("remembered_gone", "deleted", None, "ok"),
        ("cancelled", "", "default", "cancel"),
    ]
    GimpUi.init("glcic_dialog_probe")  # GLib's messages from here carry the probe's name
    for name, remembered, pick, answer in cases:
        case = {}
        config.set_property("model", remembered)
        choices = glcic_gimp_models.model_choices(NAMES, DEFAULT, remembered)
        GLib.timeout_add(50, play, case, answer, pick)
        case["can_show_dialogs"] = glcic_gimp_dialog.can_show_dialogs()
        case["returned"] = glcic_gimp_dialog.ask(procedure, config, choices)
        case["model_after"] = config.get_property("model")
        results[name] = case
    return results


def run(procedure, run_mode, image, drawables, config, data):
    try:
        results = probe(procedure, config)
    except Exception:
        results = {"error": traceback.format_exc()}
    with open(os.environ["GLCIC_PROBE_RESULTS"], "w", encoding="utf-8") as stream:
        json.dump(results, stream)
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


class DialogProbe(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("*")
        procedure.set_menu_label("glcic dialog probe")
        procedure.add_string_argument("model", "_Model", "model", "", GObject.ParamFlags.READWRITE)
        return procedure


Gimp.main(DialogProbe.__gtype__, sys.argv)
