"""Drives glcic's GIMP plug-in inside a real GIMP 3 (gimp-console, batch mode) and records what it
sees; tests/test_gimp_plugin.py runs it with python-fu-eval and makes the assertions.

Each scenario builds an image, paints a layer, selects, runs the plug-in's procedure through the
PDB as a script would, and records the layers, pixels and the procedure's return values.
Environment: GLCIC_TEST_RESULTS (the JSON file to write), GLCIC_GIMP_SCENARIOS ("daemon": every
scenario that needs a running daemon, and the refusals; "no_daemon": those without one, and with
a connection file of another protocol version).

The daemon serves "tiny" (its default) and "tiny-b"; some scenarios choose "tiny-b" through the
procedure's "model" argument, one names a model it does not have. gimp-console has no display,
so an interactive run shows no dialog: it runs with the values libgimp remembers (none yet on
the first interactive run, which therefore keeps the arguments given) and, when it succeeds,
remembers them for the next interactive or "repeat" (WITH_LAST_VALS) run.
"""

import base64
import json
import os
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
from gi.repository import Babl, Gegl, Gimp  # noqa: E402

PROCEDURE = "plug-in-glcic-content-aware-complete"
FILL = "Content-aware fill"
WIDTH, HEIGHT = 160, 120
#: The painted layer is smaller than the image and moved, so layer and image coordinates differ
#: and part of what the plug-in reads lies outside the layer.
PAINT_OFFSET, PAINT_SIZE = (6, -4), (140, 110)
RGB, GRAY = Gimp.ImageBaseType.RGB, Gimp.ImageBaseType.GRAY


def encode(data) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


def pattern(width: int, height: int) -> bytes:
    """Opaque stripes and gradients, as 8-bit RGBA."""
    out = bytearray()
    for y in range(height):
        for x in range(width):
            out += bytes(((x * 3) % 256, (y * 5) % 256, 255 if (x // 8 + y // 8) % 2 else 40, 255))
    return bytes(out)


def image_rgba8(drawable) -> bytes:
    """The drawable's pixels over the whole image, as 8-bit RGBA: transparent off the layer."""
    _, x, y = drawable.get_offsets()
    rect = Gegl.Rectangle.new(-x, -y, WIDTH, HEIGHT)
    return bytes(drawable.get_buffer().get(rect, 1.0, "R'G'B'A u8", Gegl.AbyssPolicy.NONE))


def native(drawable) -> bytes:
    """The drawable's whole buffer in its own format (its exact stored values)."""
    rect = Gegl.Rectangle.new(0, 0, drawable.get_width(), drawable.get_height())
    return bytes(drawable.get_buffer().get(rect, 1.0, None, Gegl.AbyssPolicy.NONE))


def children(container) -> list:
    """An image's top-level layers or a group's layers, top to bottom."""
    if isinstance(container, Gimp.Image):
        return container.get_layers()
    return container.get_children()


def layer_tree(container) -> list:
    """Names top to bottom; a group is [name, [children...]]."""
    return [[i.get_name(), layer_tree(i)] if i.is_group() else i.get_name()
            for i in children(container)]  # fmt: skip


def new_image(base, precision, grouped: bool = False):
    """Background, a painted layer (in a group when `grouped`) and an empty top layer."""
    image = Gimp.Image.new_with_precision(WIDTH, HEIGHT, base, precision)
    opaque = Gimp.ImageType.RGB_IMAGE if base == RGB else Gimp.ImageType.GRAY_IMAGE
    alpha = Gimp.ImageType.RGBA_IMAGE if base == RGB else Gimp.ImageType.GRAYA_IMAGE
    normal = Gimp.LayerMode.NORMAL
    background = Gimp.Layer.new(image, "Background", WIDTH, HEIGHT, opaque, 100.0, normal)
    background.fill(Gimp.FillType.WHITE)
    image.insert_layer(background, None, 0)
    parent = None
    if grouped:
        parent = Gimp.GroupLayer.new(image, "group")
        image.insert_layer(parent, None, 0)
        below = Gimp.Layer.new(image, "below", WIDTH, HEIGHT, alpha, 100.0, normal)
        image.insert_layer(below, parent, 0)
    paint = Gimp.Layer.new(image, "paint", *PAINT_SIZE, alpha, 100.0, normal)
    paint.set_offsets(*PAINT_OFFSET)
    buffer = paint.get_buffer()
    buffer.set(Gegl.Rectangle.new(0, 0, *PAINT_SIZE), "R'G'B'A u8", pattern(*PAINT_SIZE))
    buffer.flush()
    image.insert_layer(paint, parent, 0)
    top = Gimp.Layer.new(image, "top", WIDTH, HEIGHT, alpha, 100.0, normal)
    top.fill(Gimp.FillType.TRANSPARENT)
    image.insert_layer(top, parent, 0)
    image.set_selected_layers([paint])
    return image, paint


def run_procedure(image, drawables, mode=Gimp.RunMode.NONINTERACTIVE, model=None) -> dict:
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    config = procedure.create_config()
    config.set_property("run-mode", mode)
    config.set_property("image", image)
    config.set_core_object_array("drawables", drawables)
    if model is not None:
        config.set_property("model", model)
    values = procedure.run(config)
    status = values.index(0)
    message = values.index(1) if values.length() > 1 else None
    return {"status": status.value_nick, "message": message}


def find(container, name):
    for item in children(container):
        if item.get_name() == name:
            return item
        if item.is_group():
            found = find(item, name)
            if found is not None:
                return found
    return None


def rectangle(image, paint) -> list:
    """A square selection, for the refusals; the paint layer is what is selected."""
    image.select_rectangle(Gimp.ChannelOps.REPLACE, 20, 20, 30, 30)
    return [paint]


class Driver:
    def __init__(self) -> None:
        self.results = {"scenarios": {}}
        self.images = []

    def completion(
        self, key, base, precision, shape, grouped=False, mode=None, mask=False, model=None
    ) -> None:
        image, paint = new_image(base, precision, grouped)
        self.images.append(image)
        drawables = [paint]
        if mask:  # the layer's mask is what is selected: the fill comes from its layer
            layer_mask = paint.create_mask(Gimp.AddMaskType.WHITE)
            paint.add_mask(layer_mask)
            drawables = [layer_mask]
        if shape == "rectangle":
            image.select_rectangle(Gimp.ChannelOps.REPLACE, 50, 30, 48, 40)
        else:
            image.select_ellipse(Gimp.ChannelOps.REPLACE, 45, 25, 60, 50)
            Gimp.Selection.feather(image, 12.0)
        before = native(paint)
        layers_before = layer_tree(image)
        image.clean_all()
        # RunMode.INTERACTIVE is 0, so `mode or ...` would run every "interactive" call as a script.
        mode = Gimp.RunMode.NONINTERACTIVE if mode is None else mode
        outcome = run_procedure(image, drawables, mode, model)
        entry = {
            **outcome,
            "layers_before": layers_before,
            "layers_after": layer_tree(image),
            "original_unchanged": before == native(paint),
            "paint_rgba8": encode(image_rgba8(paint)),
            "selection": encode(
                image.get_selection()
                .get_buffer()
                .get(Gegl.Rectangle.new(0, 0, WIDTH, HEIGHT), 1.0, "Y u8", Gegl.AbyssPolicy.NONE)
            ),
            "image_format": Babl.get_name(paint.get_format()),
            "undo_enabled": image.undo_is_enabled(),
            "dirty": image.is_dirty(),
            "selected_before": [d.get_name() for d in drawables],
            "selected_after": [d.get_name() for d in image.get_selected_drawables()],
        }
        fill = find(image, FILL)
        if fill is not None:
            _, x, y = fill.get_offsets()
            parent = fill.get_parent()
            entry.update(
                fill_rgba8=encode(image_rgba8(fill)),
                fill_native=encode(native(fill)),
                fill_format=Babl.get_name(fill.get_format()),
                fill_rect=[x, y, fill.get_width(), fill.get_height()],
                fill_parent=parent.get_name() if parent is not None else None,
                fill_position=image.get_item_position(fill),
                paint_position=image.get_item_position(paint),
                fill_is_gray=fill.is_gray(),
                fill_has_alpha=fill.has_alpha(),
                fill_mode=fill.get_mode().value_nick,
                fill_opacity=fill.get_opacity(),
            )
        self.results["scenarios"][key] = entry

    def refusal(self, key, setup, model=None) -> None:
        image, paint = new_image(RGB, Gimp.Precision.U8_NON_LINEAR)
        self.images.append(image)
        drawables = setup(image, paint)
        layers_before = layer_tree(image)
        before = native(paint)
        image.clean_all()
        outcome = run_procedure(image, drawables, model=model)
        self.results["scenarios"][key] = {
            **outcome,
            "layers_before": layers_before,
            "layers_after": layer_tree(image),
            "original_unchanged": before == native(paint),
            "dirty": image.is_dirty(),  # anything done to the image would have made it so
        }

    def dialog_probe(self) -> None:
        """glcic's dialog, opened and answered by the test-only plug-in glcic_dialog_probe, and
        the real procedure run interactively with a screen but no daemon (which must refuse
        before showing a dialog nobody would answer)."""
        image, paint = new_image(RGB, Gimp.Precision.U8_NON_LINEAR)
        self.images.append(image)
        procedure = Gimp.get_pdb().lookup_procedure("plug-in-glcic-dialog-probe")
        config = procedure.create_config()
        config.set_property("run-mode", Gimp.RunMode.NONINTERACTIVE)
        config.set_property("image", image)
        config.set_core_object_array("drawables", [paint])
        self.results["probe_status"] = procedure.run(config).index(0).value_nick
        rectangle(image, paint)
        layers_before = layer_tree(image)
        self.results["scenarios"]["no_daemon_interactive"] = {
            **run_procedure(image, [paint], Gimp.RunMode.INTERACTIVE),
            "layers_before": layers_before,
            "layers_after": layer_tree(image),
        }

    def registration(self) -> None:
        procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
        self.results["procedure"] = {
            "label": procedure.get_menu_label(),
            "menu_paths": list(procedure.get_menu_paths()),
            "image_types": procedure.get_image_types(),
            "drawable_only": int(Gimp.ProcedureSensitivityMask.DRAWABLE),
            "arguments": [spec.get_name() for spec in procedure.get_arguments()],
            "model_default": procedure.find_argument("model").get_default_value(),
            "model_type": procedure.find_argument("model").value_type.name,
        }

    def run(self, which: str) -> None:
        u8, f32 = Gimp.Precision.U8_NON_LINEAR, Gimp.Precision.FLOAT_LINEAR
        if which == "no_daemon":
            self.refusal("no_daemon", rectangle)
            self.refusal("no_daemon_model", rectangle, model="tiny-b")
            # A daemon of another protocol version: its connection file says so.
            path = os.path.join(os.environ["GLCIC_HOME"], "run", "daemon.json")
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            document = {"host": "127.0.0.1", "port": 9, "key": "00" * 32, "pid": 1,
                        "protocol": 999}  # fmt: skip
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                    json.dump(document, stream)
                self.refusal("version_mismatch", rectangle)
            finally:
                os.unlink(path)
            if os.environ.get("GLCIC_PROBE_RESULTS"):  # GIMP has a (virtual) screen
                self.dialog_probe()
            return
        self.registration()
        self.completion("rgba8_rectangle", RGB, u8, "rectangle")
        self.completion("rgbaf32_feathered", RGB, f32, "ellipse")
        self.completion("gray16_feathered_in_group", GRAY, Gimp.Precision.U16_LINEAR, "ellipse",
                        grouped=True)  # fmt: skip
        self.completion("rgba8_model_b", RGB, u8, "rectangle", model="tiny-b")
        # The first interactive run keeps the model given and, succeeding, remembers it ...
        self.completion("rgba8_interactive", RGB, u8, "rectangle", mode=Gimp.RunMode.INTERACTIVE,
                        model="tiny-b")  # fmt: skip
        # ... for "repeat", which is given the default here and must use tiny-b all the same.
        self.completion("rgba8_last_values", RGB, u8, "rectangle",
                        mode=Gimp.RunMode.WITH_LAST_VALS, model="")  # fmt: skip
        self.completion("rgba8_mask_selected", RGB, u8, "ellipse", mask=True)

        def nothing_selected(image, paint):
            Gimp.Selection.none(image)
            return [paint]

        def a_channel(image, paint):
            image.select_rectangle(Gimp.ChannelOps.REPLACE, 20, 20, 30, 30)
            channel = Gimp.Channel.new(image, "channel", WIDTH, HEIGHT, 50.0, Gegl.Color.new("red"))
            image.insert_channel(channel, None, 0)
            return [channel]

        def two_layers(image, paint):
            image.select_rectangle(Gimp.ChannelOps.REPLACE, 20, 20, 30, 30)
            return [paint, image.get_layers()[0]]

        self.refusal("empty_selection", nothing_selected)
        self.refusal("channel", a_channel)
        self.refusal("two_layers", two_layers)
        self.refusal("unknown_model", rectangle, model="no-such-model")

    def close(self) -> None:
        for image in self.images:
            image.delete()


def main() -> None:
    path = os.environ["GLCIC_TEST_RESULTS"]
    driver = Driver()
    try:
        driver.run(os.environ.get("GLCIC_GIMP_SCENARIOS", "daemon"))
    except Exception:
        driver.results["error"] = traceback.format_exc()
    finally:
        driver.close()
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(driver.results, stream)


main()
