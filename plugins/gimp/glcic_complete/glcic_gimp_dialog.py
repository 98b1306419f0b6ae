"""The plug-in's dialog for interactive runs: GIMP's own procedure dialog, editing the
procedure's arguments, with the model offered as a list of the daemon's models.

libgimp remembers the arguments by itself: an interactive run starts from the values of the
last successful interactive run (on this image if it had one, else from any image) and saves
them again when the run succeeds. So the dialog only edits `config`; the "Reset", "Load Saved
Settings" and "Save Settings" buttons GIMP adds work on the same values.

Layout: one "Completion" frame holding a grid of labelled rows, today just "Model". Options
added later (for instance "Adapt to this image") become further rows of the same grid, or
GIMP's own widgets for new procedure arguments below it (ProcedureDialog.fill).

Only imported for interactive runs, so scripts and gimp-console never load GTK.
"""

from __future__ import annotations

import gi

gi.require_version("Gtk", "3.0")
gi.require_version("GimpUi", "3.0")
from gi.repository import GimpUi, Gtk  # noqa: E402

#: argv[0] for GTK, by GIMP's convention the plug-in's executable name.
PROGRAM = "glcic_complete"
MODEL_ARGUMENT = "model"


def can_show_dialogs() -> bool:
    """Whether this process can open windows. gimp-console and `gimp -i` give a plug-in no
    display, and GimpUi.init() would end the process there (GTK exits when it finds none), so
    without one an interactive run goes on with the remembered values, as a script's would."""
    opened, _ = Gtk.init_check([])
    return bool(opened)


def ask(procedure, config, choices) -> bool:
    """Show the dialog for `config`, with the model list `choices` (a
    glcic_gimp_models.ModelChoices). Returns False when the user cancelled."""
    GimpUi.init(PROGRAM)
    config.set_property(MODEL_ARGUMENT, choices.active)
    dialog = GimpUi.ProcedureDialog.new(procedure, config, None)
    try:
        dialog.get_content_area().pack_start(_options(config, choices), False, False, 0)
        return bool(dialog.run())
    finally:
        dialog.destroy()


def _options(config, choices) -> Gtk.Widget:
    """The "Completion" frame: a grid with one labelled row per option."""
    grid = Gtk.Grid(row_spacing=6, column_spacing=12, margin=6)
    store = Gtk.ListStore(str, str)
    for value, label in choices.rows:
        store.append([value, label])
    combo = GimpUi.prop_string_combo_box_new(config, MODEL_ARGUMENT, store, 0, 1)
    combo.set_hexpand(True)
    combo.set_tooltip_text(
        "Which of the glcic daemon's models fills the selection. Models you trained appear "
        "here once exported into the daemon's model folder (glcic-train export)."
    )
    label = Gtk.Label.new_with_mnemonic("_Model:")
    label.set_mnemonic_widget(combo)
    label.set_xalign(0.0)
    grid.attach(label, 0, 0, 1, 1)
    grid.attach(combo, 1, 0, 1, 1)
    if choices.note:
        note = Gtk.Label(label=choices.note, wrap=True, max_width_chars=50, xalign=0.0)
        grid.attach(note, 0, 1, 2, 1)
    frame = Gtk.Frame(label="Completion")
    frame.add(grid)
    frame.show_all()
    return frame
