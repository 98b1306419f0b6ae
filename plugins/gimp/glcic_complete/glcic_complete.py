#!/usr/bin/env python3
"""glcic's "Content-aware complete" for GIMP 3: fills the selection through the local daemon.

Filters > Enhance > Content-aware complete reads the selection (soft edges kept) and the selected
layer's pixels around it, has the glcic daemon complete the selected area, and puts the result on
a new layer directly above that layer, with the selection as its alpha, in one undo step.

`glcic-daemon install-plugin gimp` puts this file in a folder of the same name in GIMP's plug-ins
folder, with the thin client (glcic_client.py, glcic_discovery.py), the plugins' shared module
(glcic_plugin_common.py) and, for GIMP builds with their own Python, pyzmq and msgpack (vendor/).

Threads: GIMP's API is used from this process's main thread only. The daemon call runs in a
CompletionJob on a worker thread while the main thread waits on its events and keeps GIMP's
progress bar (with its Cancel button) moving. Cancelling: GIMP 3 does not tell a plug-in that
Cancel was pressed; it ends the plug-in's process (a quit message, then SIGKILL 10 ms later), so
nothing here runs after Cancel. The worker's `alive` messages stop with it, so the daemon drops
the request within a few seconds; GIMP's image is untouched, as the layer is only added once the
fill has arrived.

The model: the procedure's "model" argument names one of the daemon's models ("" for the
daemon's default), so scripts choose it; interactive runs show a dialog listing the daemon's
models (glcic_gimp_dialog), and libgimp remembers the choice for the next run. Unknown names are
refused with the list of the models the daemon has (glcic_gimp_models).

Errors (no daemon, timeouts, version mismatches, daemon-side failures, an empty selection, an
unknown model) end the procedure with an execution error carrying the words for the user, which
GIMP shows.

Ending: see ContentAwareComplete.do_quit. After a run the process ends itself instead of letting
libgimp send GIMP a goodbye that GIMP 3.0 no longer reads, which printed a "Broken pipe" warning.
"""

import contextlib
import os
import queue
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
for _folder in (os.path.join(_HERE, "vendor"), _HERE):
    if os.path.isdir(_folder) and _folder not in sys.path:
        sys.path.insert(0, _folder)

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import glcic_gimp_models as models  # noqa: E402
from gi.repository import Gegl, Gimp, GLib, GObject  # noqa: E402

PROCEDURE = "plug-in-glcic-content-aware-complete"
TITLE = "Content-aware complete"
MENU = "<Image>/Filters/Enhance"
LAYER_NAME = "Content-aware fill"
#: How often the main thread looks at the worker's events and moves the progress bar (seconds).
POLL_S = 0.1
#: What GEGL converts every precision and colour model to and from (babl does the maths): the
#: daemon works on 8-bit sRGB RGBA, and a selection is coverage (linear, one channel).
PIXELS = "R'G'B'A u8"
SELECTION = "Y u8"
MODEL_ARGUMENT = "model"
#: How long the end of a run waits for the worker thread to finish its last exchange (seconds).
WORKER_EXIT_S = 5.0


class UserError(Exception):
    """Something the user can fix; the message says how."""


def _rectangle(rect) -> Gegl.Rectangle:
    return Gegl.Rectangle.new(rect.x, rect.y, rect.width, rect.height)


# -- reading and writing pixels -----------------------------------------------------------------


def source_layer(drawables) -> Gimp.Layer:
    """The one layer to complete from (a selected layer mask stands for its layer)."""
    if len(drawables) != 1:
        raise UserError(
            f"{TITLE} works on one layer at a time: select just the layer to complete from."
        )
    drawable = drawables[0]
    if drawable.is_layer_mask():
        return Gimp.Layer.from_mask(drawable)
    if not drawable.is_layer():
        raise UserError(
            f"{TITLE} fills from a layer's pixels: select a layer (not a channel) first."
        )
    return drawable


def read_selection(image: Gimp.Image, common):
    """The selection's bounding box (image coordinates) and its 8-bit values inside it."""
    _, non_empty, x1, y1, x2, y2 = Gimp.Selection.bounds(image)
    image_rect = common.Rect(0, 0, image.get_width(), image.get_height())
    box = common.Rect.from_corners(x1, y1, x2, y2).intersected(image_rect)
    if not non_empty or box.empty:
        raise UserError(
            "The selection is empty. Select the region to fill first (for example with the "
            f"Free Select or Rectangle Select tool), then run {TITLE} again."
        )
    buffer = image.get_selection().get_buffer()
    values = bytes(buffer.get(_rectangle(box), 1.0, SELECTION, Gegl.AbyssPolicy.NONE))
    if values.count(0) == len(values):  # e.g. a feathered selection too faint for 8 bits
        raise UserError(
            "The selection is empty (or too faint to fill). Select the region to fill first, "
            f"then run {TITLE} again."
        )
    return image_rect, box, values


def read_rgba8(layer: Gimp.Layer, region) -> bytes:
    """The layer's pixels inside `region` (image coordinates) as 8-bit sRGB RGBA.

    A layer's buffer is in layer coordinates, so the region moves by the layer's offsets; what
    lies outside the layer reads as transparent (GEGL's "none" abyss is all zeros)."""
    _, offset_x, offset_y = layer.get_offsets()
    rect = region.translated(-offset_x, -offset_y)
    data = layer.get_buffer().get(_rectangle(rect), 1.0, PIXELS, Gegl.AbyssPolicy.NONE)
    return bytes(data)


def add_fill_layer(image: Gimp.Image, above: Gimp.Layer, rect, pixels: bytes) -> Gimp.Layer:
    """A new layer covering `rect` directly above `above` (same parent), holding `pixels`
    (RGBA8, straight alpha) converted by babl to the image's precision and colour model."""
    if image.get_base_type() == Gimp.ImageBaseType.GRAY:
        kind = Gimp.ImageType.GRAYA_IMAGE
    else:
        kind = Gimp.ImageType.RGBA_IMAGE
    layer = Gimp.Layer.new(
        image, LAYER_NAME, rect.width, rect.height, kind, 100.0, Gimp.LayerMode.NORMAL
    )
    layer.set_offsets(rect.x, rect.y)
    buffer = layer.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, rect.width, rect.height), PIXELS, pixels)
    buffer.flush()
    image.insert_layer(layer, above.get_parent(), image.get_item_position(above))
    return layer


# -- one run ------------------------------------------------------------------------------------


class Completion:
    """One run of the procedure: the checks, the conversation with the worker, the new layer."""

    def __init__(self, common, image: Gimp.Image, layer: Gimp.Layer) -> None:
        self.common = common
        self.image = image
        self.layer = layer
        self.image_rect, self.box, self.selection = read_selection(image, common)

    def run(self, model: str | None) -> str:
        """Complete with the daemon's `model` (None: its default). Returns "done" or
        "cancelled"; raises UserError with the words to show."""
        job = self.common.CompletionJob("gimp", model)
        job.start()
        Gimp.progress_init(f"{TITLE}: connecting to the glcic daemon…")
        try:
            return self._wait(job)
        finally:
            if job.running:
                job.cancel()
            _wait_for_worker(job)
            Gimp.progress_end()

    def _wait(self, job) -> str:
        moving = False  # whether the daemon has reported a fraction yet
        while True:
            try:
                event = job.events.get(timeout=POLL_S)
            except queue.Empty:
                if not job.running and job.events.empty():
                    raise UserError("The glcic completion stopped unexpectedly.") from None
                if not moving:
                    Gimp.progress_pulse()  # until the daemon reports how far it is
                continue
            kind = event[0]
            if kind == "need_pixels":
                job.provide(self._request(int(event[1])))
            elif kind == "progress":
                moving = True
                stage = self.common.PROGRESS_STAGES.get(event[1], event[1])
                Gimp.progress_set_text(f"{TITLE}: {stage}")
                Gimp.progress_update(max(0.0, min(1.0, float(event[2]))))
            elif kind == "result":
                self._apply(event[1], event[2])
                return "done"
            elif kind == "cancelled":
                return "cancelled"
            elif kind == "error":
                raise UserError(str(event[1]))

    def _request(self, max_hole_side: int):
        """The selection's box plus the context the network looks at, no more."""
        common = self.common
        region = common.context_region(self.box, self.image_rect, max_hole_side)
        rgba = read_rgba8(self.layer, region)
        return common.Request(region, rgba, common.region_mask(self.selection, self.box, region))

    def _apply(self, request, result) -> None:
        """The daemon's changed rectangle on a new layer, with the selection as alpha."""
        common = self.common
        changed = common.Rect(result.x, result.y, result.width, result.height).translated(
            request.region.x, request.region.y
        )
        inside = changed.intersected(self.box)
        if inside.empty:
            raise UserError("The glcic daemon returned nothing inside the selection.")
        rgba = common.sub_rows(
            result.rgba, result.width, inside.translated(-changed.x, -changed.y), 4
        )
        alpha = common.sub_rows(
            self.selection, self.box.width, inside.translated(-self.box.x, -self.box.y)
        )
        pixels = common.fill_layer_pixels(rgba, alpha)
        self.image.undo_group_start()
        try:
            add_fill_layer(self.image, self.layer, inside, pixels)
            # The source stays selected, so the next completion reads from it again.
            self.image.set_selected_layers([self.layer])
        finally:
            self.image.undo_group_end()
        Gimp.displays_flush()


def _wait_for_worker(job) -> None:
    """Let the worker thread finish its last exchange (it closes its connection to the daemon
    on the way out), so no thread of ours outlives the run. It ends within moments of its
    last event or of a cancel; the limit only guards against a daemon that stopped
    answering."""
    deadline = time.monotonic() + WORKER_EXIT_S
    while job.running and time.monotonic() < deadline:
        time.sleep(0.01)


def _import_common():
    """The shared plugin module; it needs pyzmq and msgpack in GIMP's Python."""
    try:
        import glcic_plugin_common
    except ImportError as error:
        raise UserError(
            f"{TITLE} cannot talk to the glcic daemon: GIMP's Python lacks a module it needs "
            f"({error}). On Linux install python3-zmq and python3-msgpack (e.g. sudo apt "
            "install python3-zmq python3-msgpack); for a GIMP with its own Python (Windows, "
            "macOS, Flatpak, AppImage) run glcic-daemon install-plugin gimp --python X.Y "
            "with that Python's version."
        ) from None
    return glcic_plugin_common


# -- the model ----------------------------------------------------------------------------------


def _daemon_models(common) -> tuple[list[str], str | None]:
    try:
        return common.daemon_models()
    except common.client_module.ClientError as error:
        raise UserError(common.describe_client_error(error, "gimp")) from None


def choose_model(common, procedure, run_mode, config) -> str | None:
    """The model to complete with ("" for the daemon's default), or None when the user
    cancelled the dialog. Scripts (and interactive runs without a display) give the name in
    the "model" argument; an interactive run asks, starting from the remembered choice."""
    requested = config.get_property(MODEL_ARGUMENT) or models.DAEMON_DEFAULT
    interactive = run_mode == Gimp.RunMode.INTERACTIVE and _dialogs().can_show_dialogs()
    if not interactive and requested == models.DAEMON_DEFAULT:
        return requested  # the daemon knows its default; no need to ask it first
    names, default = _daemon_models(common)
    if interactive:
        choices = models.model_choices(names, default, requested)
        if not _dialogs().ask(procedure, config, choices):
            return None
        requested = config.get_property(MODEL_ARGUMENT) or models.DAEMON_DEFAULT
    problem = models.model_problem(requested, names, default)
    if problem is not None:
        raise UserError(problem)
    return requested


def _dialogs():
    """The dialog module, imported only for interactive runs: it loads GTK."""
    import glcic_gimp_dialog

    return glcic_gimp_dialog


# -- the procedure ------------------------------------------------------------------------------

#: Whether this process ran the procedure (rather than only registering it); see do_quit.
_ran = False


def run(procedure, run_mode, image, drawables, config, data):
    """The procedure: complete `image`'s selection from its one selected layer."""
    global _ran
    _ran = True
    try:
        common = _import_common()
        layer = source_layer(drawables)
        completion = Completion(common, image, layer)  # an empty selection is refused first
        model = choose_model(common, procedure, run_mode, config)
        if model is None:
            return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
        outcome = completion.run(model or None)
    except UserError as error:
        return _failure(procedure, str(error))
    except Exception as error:  # a bug must reach the user in words, not as a silent crash
        return _failure(procedure, f"{TITLE} failed unexpectedly: {type(error).__name__}: {error}")
    if outcome == "cancelled":
        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
    return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())


def _failure(procedure, text: str):
    """An execution error carrying `text`, which GIMP itself shows: as "Execution error for
    'Content-aware complete'" when run from the menu, as "Calling error for procedure ..." when
    a script's call fails (unless the script handles PDB errors itself). Calling Gimp.message
    too would show the same words twice."""
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error(text))


def _end_process() -> None:
    """End this process now, its output flushed (see ContentAwareComplete.do_quit)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


class ContentAwareComplete(Gimp.PlugIn):
    """Registers the procedure, and ends the process after a run."""

    def do_quit(self):
        """libgimp calls this on its way out, just before it sends GIMP a "quit" message.

        GIMP 3.0 closes its end of the connection as soon as a plug-in's procedure returns
        (gimp_plug_in_handle_proc_return closes the plug-in there), so that last message goes
        to a closed pipe whenever GIMP gets there first, and libgimp prints "gimp_flush():
        error: Broken pipe". Which side wins is scheduling luck, so it showed on most runs of
        every Python plug-in on a busy machine (GIMP's python-eval too). Nothing is lost by
        not sending it: GIMP has the return values and never reads further, and the worker
        thread has already finished (Completion.run). The same path runs when GIMP stops a
        run (Cancel on the progress bar), where ending at once is what GIMP asks for. When
        GIMP only queried the plug-in (registration at start-up) it does wait for that
        message, so it is sent as usual."""
        if _ran:
            _end_process()

    def do_query_procedures(self):
        return [PROCEDURE]

    def do_set_i18n(self, name):
        return False  # no translations (yet)

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(Gimp.ProcedureSensitivityMask.DRAWABLE)
        procedure.set_menu_label(TITLE)
        procedure.add_menu_path(MENU)
        procedure.set_documentation(
            "Fill the selection with content completed from its surroundings",
            "Completes the selected area of the selected layer with the glcic completion "
            "network, run by the local glcic daemon (start it with: glcic-daemon start). The "
            "result goes on a new layer directly above the layer, holding the fill inside the "
            "selection only, with the selection's soft edges as its alpha.",
            name,
        )
        procedure.set_attribution("glcic developers", "glcic developers", "2026")
        procedure.add_string_argument(
            MODEL_ARGUMENT,
            "_Model",
            "Name of the glcic daemon's model to complete with, as `glcic-daemon models` "
            "lists them; empty for the daemon's default model",
            models.DAEMON_DEFAULT,
            GObject.ParamFlags.READWRITE,
        )
        return procedure


if __name__ == "__main__":
    Gimp.main(ContentAwareComplete.__gtype__, sys.argv)
