"""Drives glcic's Krita plugin inside a real Krita (under Xvfb) and records what it sees.

tests/test_krita_plugin.py installs this next to the plugin, starts Krita and reads the JSON
written to $GLCIC_TEST_RESULTS; the assertions live there. Once Krita's window exists, each
scenario builds a document, paints, selects, triggers the plugin's registered action, waits for
it to finish and records layers, pixels and messages; then undo is triggered and the layers
recorded again. The driver ends the process itself (Krita's file_quit does not, headless).

A step machine, never a nested event loop. Every scenario is a generator; each `yield` ends
the current step and hands control back to Krita's main event loop, and a fresh timer resumes
the scenario: `yield 300` after that many milliseconds, `yield Until(condition)` once the
condition holds (looked at every 20 ms from the main loop) or its time is up, the generator then
receiving whether it held. This matters because Krita (KisApplication::notify) postpones its
image-to-UI notifications (the layers docker learning of a new layer, the view making a layer
active) while an event handler runs a nested event loop, until the outermost handler returns:
a driver waiting in nested loops (QEventLoop.exec_, processEvents, Document.waitForDone) sees a
Krita that never catches up, and Krita 5.2 then has no active layer at all. Waiting for the
image uses Document.tryBarrierLock, which never blocks.

The results file is rewritten after every scenario, naming the last step reached, so a Krita
that crashes or hangs leaves a clear trace for the test (see tests/support/krita_harness.py).
"""

import json
import os
import struct
import sys
import time
import traceback

from krita import Extension, Krita, Selection
from PyQt5.QtCore import QObject, QTimer
from PyQt5.QtWidgets import QApplication, QDialogButtonBox, QMessageBox, QPushButton

ACTION = "glcic_content_aware_complete"
SETTINGS_ACTION = "glcic_content_aware_complete_settings"
FILL = "Content-aware fill"
#: The second model in the daemon's model directory (tests/test_krita_plugin.py puts it there).
OTHER_MODEL = "other"
WIDTH, HEIGHT = 160, 120
WAIT_MS = 120_000
#: How long the UI is left to settle after a fill: Krita activated the new layer 0.2-0.6 s late.
SETTLE_MS = 1500
#: Krita's 8-bit default profile (its 16-bit integer default, sRGB-elle-V2-g10.icc, is linear).
SRGB = "sRGB-elle-V2-srgbtrc.icc"
#: How often an Until condition is looked at, from Krita's main event loop.
POLL_MS = 20


class Until:
    """What a scenario yields to wait, in Krita's main loop, until `condition()` holds."""

    def __init__(self, condition, timeout_ms: int = 20_000) -> None:
        self.condition = condition
        self.deadline = time.perf_counter() + timeout_ms / 1000


def pattern(model: str, depth: str, width: int, height: int) -> bytes:
    """Opaque stripes and gradients in Krita's channel order for the colour space: B, G, R, A
    for 8 and 16-bit integer RGBA, R, G, B, A for float, gray and alpha for GRAYA."""
    out = bytearray()
    for y in range(height):
        for x in range(width):
            b, g, r = (x * 3) % 256, (y * 5) % 256, 255 if (x // 8 + y // 8) % 2 else 40
            if model == "GRAYA":
                channels = ((b + g + r) // 3, 255)
            elif depth == "F32":
                channels = (r, g, b, 255)
            else:
                channels = (b, g, r, 255)
            for value in channels:
                if depth == "U8":
                    out.append(value)
                elif depth == "U16":
                    out += (value * 257).to_bytes(2, "little")
                else:
                    out += struct.pack("<f", value / 255)
    return bytes(out)


def image_idle(doc) -> bool:
    """Whether the image has no work queued (its strokes, such as adding a layer, are done);
    never blocks, unlike Document.waitForDone."""
    if doc.tryBarrierLock():
        doc.unlock()
        return True
    return False


def active_name(doc):
    node = doc.activeNode()
    return node.name() if node is not None else None


def record_layers(doc) -> list:
    return [node.name() for node in doc.rootNode().childNodes() if node.type() != "selectionmask"]


def fills(doc) -> list:
    """The pixels of every fill layer, bottom to top, as hex."""
    return [
        bytes(node.pixelData(0, 0, WIDTH, HEIGHT)).hex()
        for node in doc.rootNode().childNodes()
        if node.name() == FILL
    ]


def messages() -> list:
    """Texts of visible message boxes, which are then closed."""
    texts = []
    for widget in QApplication.topLevelWidgets():
        if isinstance(widget, QMessageBox) and widget.isVisible():
            texts.append(widget.text())
            widget.close()
    return texts


class Driver:
    def __init__(self) -> None:
        self.window = Krita.instance().activeWindow()
        self.results = {"scenarios": {}}
        import glcic_complete

        self.extension = glcic_complete.EXTENSION
        self.completion = glcic_complete.EXTENSION.completion
        self.elapsed = self.longest_stall = 0.0
        self.ui_ticks = 0
        # How often the plugin converted pixels with Krita's colour engine (a scratch document)
        from glcic_complete import document_io

        self.engine_conversions = 0
        convert = document_io.convert

        def counted(*args):
            self.engine_conversions += 1
            return convert(*args)

        document_io.convert = counted

    # -- waiting, always in Krita's main loop --

    def idle(self, doc, settle_ms: int = 200):
        """Wait until the image's queued work is done, then `settle_ms` more for Krita's UI to
        take in what it announced (its notifications reach the UI through the event loop)."""
        yield Until(lambda: image_idle(doc))
        if settle_ms:
            yield settle_ms

    def trigger(self, cancel: bool = False, close=None):
        """Trigger the registered action and wait until the plugin reports how it ended; the
        outcome is the generator's value. `cancel` presses the progress dialog's Cancel as
        soon as the action has returned; `close` is a document to close at that moment,
        before the fill arrives."""
        outcome = []
        ticks = [0]
        last = [time.perf_counter()]
        self.longest_stall = 0.0
        self.stall_at = (last[0], last[0])  # when the longest gap began and ended

        def tick() -> None:
            ticks[0] += 1
            now = time.perf_counter()
            if now - last[0] > self.longest_stall:
                self.longest_stall, self.stall_at = now - last[0], (last[0], now)
            last[0] = now

        ticker = QTimer()
        ticker.setInterval(5)
        ticker.timeout.connect(tick)
        ticker.start()
        self.completion.finished.connect(outcome.append)
        started = self.started = time.perf_counter()
        try:
            Krita.instance().action(ACTION).trigger()
            if cancel and self.completion.dialog is not None:
                self.completion.dialog.findChild(QPushButton).click()
            if close is not None:
                close.close()
            if not outcome:  # still running: the UI thread came back at once
                yield Until(lambda: bool(outcome), WAIT_MS)
        finally:
            now = time.perf_counter()
            self.elapsed = now - started
            if now - last[0] > self.longest_stall:
                self.longest_stall, self.stall_at = now - last[0], (last[0], now)
            ticker.stop()
            self.completion.finished.disconnect(outcome.append)
        self.ui_ticks = ticks[0]
        return outcome[0] if outcome else "timeout"

    def fill_settled(self):
        """Wait until the plugin's watch over the new layer's activation has ended (Krita
        activates the new layer a moment after adding it; the plugin puts the source back)."""
        keeper = self.completion.keeper
        if keeper is not None:
            yield Until(lambda: keeper.done, 10_000)
        yield 100

    def show(self, doc):
        """Open `doc` in a view and make that view the active one, as opening an image does."""
        window = self.window.qwindow()
        # As a click on Krita's window would: the window active, then the new view in it.
        window.activateWindow()
        QApplication.setActiveWindow(window)
        view = self.window.addView(doc)
        self.window.showView(view)
        view.setVisible()
        yield Until(lambda: Krita.instance().activeDocument() == doc, 5000)

    def new_document(
        self, model: str, depth: str, name: str, group: bool = False, profile: str = ""
    ):
        """A document with layers Background, paint (the pattern, offset) and top, and with
        `group` a group layer above them, "paint" active; the generator's value is (document,
        paint layer). No `profile`: Krita's default for the model and depth."""
        doc = Krita.instance().createDocument(WIDTH, HEIGHT, name, model, depth, profile, 72.0)
        if group:
            # Added before the document has a view: Krita 5.1 trips a SAFE ASSERT ("dummy",
            # kis_dummies_facade_base.cpp) when a script adds a group layer to a shown image.
            root = doc.rootNode()
            root.addChildNode(doc.createNode("group", "grouplayer"), root.childNodes()[0])
            yield from self.idle(doc, 0)
        yield from self.show(doc)
        root = doc.rootNode()
        background = root.childNodes()[0]
        paint = doc.createNode("paint", "paintlayer")
        root.addChildNode(paint, background)
        top = doc.createNode("top", "paintlayer")
        root.addChildNode(top, paint)
        paint.setPixelData(pattern(model, depth, WIDTH, HEIGHT), 0, 0, WIDTH, HEIGHT)
        paint.move(6, -4)  # a layer offset: its pixels no longer start at the image origin
        yield from self.idle(doc)
        # Krita's UI makes each added layer active once it has taken it in: "top" last.
        yield Until(lambda: active_name(doc) == "top", 5000)
        yield from self.activate(doc, paint)
        return doc, paint

    def select(self, doc, x: int, y: int, width: int, height: int, feather: int = 0):
        selection = Selection()
        selection.select(x, y, width, height, 255)
        if feather:
            selection.feather(feather)
        doc.setSelection(selection)
        yield from self.idle(doc)

    def activate(self, doc, node):
        """Make `node` active, as a click in the layers docker would, and wait until it is."""
        doc.setActiveNode(node)
        yield Until(lambda: active_name(doc) == node.name(), 5000)

    def selected_document(self, name: str):
        """An 8-bit RGBA document with the same pattern and rectangle every time."""
        doc, paint = yield from self.new_document("RGBA", "U8", name)
        yield from self.select(doc, 50, 30, 48, 40)
        yield from self.activate(doc, paint)
        return doc, paint

    # -- the scenarios --

    def second_fill_scenario(self):
        """Complete, give Krita's own event loop the time a user's next click would, then
        complete again with the same selection: the second fill must come from the source
        layer, as the first did."""
        doc, paint = yield from self.selected_document("second fill")
        yield SETTLE_MS  # Krita's UI catches up with the document's layers, as after a load
        yield from self.activate(doc, paint)
        active_before = active_name(doc)
        first = yield from self.trigger()
        added = FILL in record_layers(doc)
        yield SETTLE_MS  # the user looks at the fill before completing again
        keeper = self.completion.keeper
        active_between = active_name(doc)
        second = yield from self.trigger()
        yield from self.idle(doc, SETTLE_MS)
        self.results["scenarios"]["second_fill"] = {
            "outcomes": [first, second],
            "message": self.completion.last_message,
            "added": added,
            "active_before": active_before,
            "active_between": active_between,
            "corrections": keeper.corrected if keeper is not None else None,
            "active_after_second": active_name(doc),
            "layers": record_layers(doc),
            "fills": fills(doc),
            "selection": bytes(doc.selection().pixelData(0, 0, WIDTH, HEIGHT)).hex(),
        }
        doc.setModified(False)

    def disable_keeper(self) -> None:
        """The control run: the plugin's fix (activation.KeepSourceActive) does nothing, so
        the second-fill scenario shows what Krita itself does with the new layer."""
        from glcic_complete import activation

        activation.KeepSourceActive.start = activation.KeepSourceActive.stop

    def open_settings(self):
        """Open the settings dialog through its action and wait for the daemon's model list;
        the generator's value is what the dialog showed."""
        Krita.instance().action(SETTINGS_ACTION).trigger()
        dialog = self.extension.settings_dialog
        status_after_trigger = dialog.status
        yield Until(lambda: dialog.status != "loading")
        combo = dialog.model
        return {
            "dialog": dialog,
            "status": dialog.status,
            "status_after_trigger": status_after_trigger,
            "visible": dialog.isVisible(),
            "items": [[combo.itemText(i), combo.itemData(i)] for i in range(combo.count())],
            "current": combo.currentData(),
            "note": dialog.note.text(),
        }

    def model_choice_scenario(self):
        """Choose the daemon's second model in the settings dialog, then complete: the daemon
        must run that model. The fill to compare with is the same one from the default."""
        doc, _ = yield from self.selected_document("default model")
        default_outcome = yield from self.trigger()
        yield from self.idle(doc)
        default_fill = fills(doc)
        doc.setModified(False)
        seen = yield from self.open_settings()
        dialog = seen.pop("dialog")
        dialog.model.setCurrentIndex(dialog.model.findData(OTHER_MODEL))
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
        yield 200
        doc, _ = yield from self.selected_document("chosen model")
        outcome = yield from self.trigger()
        yield from self.idle(doc)
        self.results["scenarios"]["model_choice"] = {
            **seen,
            "default_outcome": default_outcome,
            "default_fill": default_fill,
            "outcome": outcome,
            "message": self.completion.last_message,
            "asked_for": self.completion.last_model,
            "stored": Krita.instance().readSetting("glcic", "model", ""),
            "fill": fills(doc),
        }
        doc.setModified(False)

    def restart_checks(self):
        """A Krita started again (same user): the choice is remembered and used; once its model
        is gone from the daemon, the dialog and the action say so clearly."""
        remembered = Krita.instance().readSetting("glcic", "model", "")
        doc, _ = yield from self.selected_document("after restart")
        outcome = yield from self.trigger()
        yield from self.idle(doc)
        entry = {
            "remembered": remembered,
            "outcome": outcome,
            "message": self.completion.last_message,
            "asked_for": self.completion.last_model,
            "fill": fills(doc),
        }
        doc.setModified(False)
        os.remove(os.path.join(os.environ["GLCIC_HOME"], "models", OTHER_MODEL + ".safetensors"))
        doc, _ = yield from self.selected_document("model removed")
        messages()
        entry["removed_outcome"] = yield from self.trigger()
        entry["removed_message"] = self.completion.last_message
        entry["removed_shown"] = messages()
        entry["removed_layers"] = record_layers(doc)
        doc.setModified(False)
        seen = yield from self.open_settings()
        seen.pop("dialog").reject()
        entry["dialog_after_removal"] = seen
        self.results["restart"] = entry

    def completion_scenario(
        self, key: str, model: str, depth: str, feather: int, cancel: bool = False, profile=""
    ):
        doc, paint = yield from self.new_document(model, depth, key, profile=profile)
        yield from self.select(doc, 50, 30, 48, 40, feather)
        before = bytes(paint.pixelData(-20, -20, WIDTH + 40, HEIGHT + 40))
        layers_before = record_layers(doc)
        yield from self.activate(doc, paint)
        active_before = active_name(doc)
        conversions = self.engine_conversions
        outcome = yield from self.trigger(cancel)
        conversions = self.engine_conversions - conversions
        yield from self.idle(doc)
        layers_after = record_layers(doc)
        entry = {
            "outcome": outcome,
            "message": self.completion.last_message if outcome != "done" else "",
            "ui_ticks": self.ui_ticks,
            "layers_before": layers_before,
            "layers_after": layers_after,
            "original_unchanged": before
            == bytes(paint.pixelData(-20, -20, WIDTH + 40, HEIGHT + 40)),
            "model": model,
            "depth": depth,
            "profile": doc.colorProfile(),
            "active_before": active_before,
            "engine_conversions": conversions,
        }
        fill = next((n for n in doc.rootNode().childNodes() if n.name() == FILL), None)
        if fill is not None:
            entry["fill_space"] = [fill.colorModel(), fill.colorDepth(), fill.colorProfile()]
            entry["fill_pixels"] = bytes(fill.pixelData(0, 0, WIDTH, HEIGHT)).hex()
            entry["selection"] = bytes(doc.selection().pixelData(0, 0, WIDTH, HEIGHT)).hex()
            yield from self.fill_settled()
            entry["active_after"] = active_name(doc)
            Krita.instance().action("edit_undo").trigger()
            yield from self.idle(doc)
            yield Until(lambda: record_layers(doc) == layers_before, 5000)
            entry["layers_after_undo"] = record_layers(doc)
        self.results["scenarios"][key] = entry
        doc.setModified(False)

    def refusal_scenario(self, key: str, setup, group: bool = False):
        doc, _ = yield from self.new_document("RGBA", "U8", key, group)
        yield from setup(doc)
        layers_before = record_layers(doc)
        messages()
        outcome = yield from self.trigger()
        yield 50  # the message box is shown
        self.results["scenarios"][key] = {
            "outcome": outcome,
            "message": self.completion.last_message,
            "shown": messages(),
            "layers_before": layers_before,
            "layers_after": record_layers(doc),
        }
        doc.setModified(False)

    def refusal_scenarios(self):
        def no_selection(doc):
            yield from self.idle(doc)  # a new document has no selection

        def group_active(doc):
            yield from self.select(doc, 10, 10, 20, 20)
            group = next(node for node in doc.rootNode().childNodes() if node.name() == "group")
            yield from self.activate(doc, group)

        yield from self.refusal_scenario("no_selection", no_selection)
        yield from self.refusal_scenario("not_a_paint_layer", group_active, group=True)

    def no_daemon_scenarios(self):
        saved = os.environ.get("GLCIC_CONNECTION_FILE")
        os.environ["GLCIC_CONNECTION_FILE"] = os.path.join(os.environ["HOME"], "no-daemon.json")
        try:

            def rectangle(doc):
                yield from self.select(doc, 20, 20, 30, 30)

            yield from self.refusal_scenario("no_daemon", rectangle)
            seen = yield from self.open_settings()
            seen.pop("dialog").reject()
            self.results["scenarios"]["settings_without_daemon"] = seen
        finally:
            if saved is None:
                del os.environ["GLCIC_CONNECTION_FILE"]
            else:
                os.environ["GLCIC_CONNECTION_FILE"] = saved

    def closed_meanwhile_scenario(self):
        """The user closes the image while the daemon works: nothing to add, and words say so."""
        doc, _ = yield from self.new_document("RGBA", "U8", "closed meanwhile")
        yield from self.select(doc, 30, 30, 40, 30)
        yield SETTLE_MS  # nothing of Krita's own is pending for the document it will close
        doc.setModified(False)
        messages()
        outcome = yield from self.trigger(close=doc)
        yield 50  # the message box is shown
        self.results["scenarios"]["closed_meanwhile"] = {
            "outcome": outcome,
            "message": self.completion.last_message,
            "shown": messages(),
        }

    def source_removed_scenario(self):
        """The user deletes the source layer while the daemon works: the fill still arrives,
        on top of the stack, rather than being lost."""
        doc, paint = yield from self.new_document("RGBA", "U8", "source removed")
        yield from self.select(doc, 30, 30, 40, 30)
        asked = []
        # The plugin reads the pixels when its worker asks; the layer is deleted right then,
        # and the worker gets the pixels only once Krita has removed the layer.
        self.completion._provide_pixels = lambda job, limit: asked.append((job, limit))
        outcome = []
        self.completion.finished.connect(outcome.append)
        try:
            Krita.instance().action(ACTION).trigger()
            yield Until(lambda: bool(asked) or bool(outcome), WAIT_MS)
            if asked:
                job, limit = asked[0]
                provided = []

                class Holder:  # catches the request the plugin reads from the layer
                    provide = provided.append

                type(self.completion)._provide_pixels(self.completion, Holder, limit)
                paint.remove()
                yield Until(lambda: paint.parentNode() is None and image_idle(doc), 5000)
                yield 200
                job.provide(provided[0] if provided else None)
                yield Until(lambda: bool(outcome), WAIT_MS)
        finally:
            del self.completion._provide_pixels  # the class's method again
            self.completion.finished.disconnect(outcome.append)
        yield from self.idle(doc)
        self.results["scenarios"]["source_removed"] = {
            "outcome": outcome[0] if outcome else "timeout",
            "message": self.completion.last_message if outcome != ["done"] else "",
            "layers_after": record_layers(doc),
        }
        yield from self.fill_settled()
        doc.setModified(False)

    def shortcut_check(self):
        ours = Krita.instance().action(ACTION)
        shortcut = ours.shortcut().toString()
        clashes = sorted(
            action.objectName()
            for action in Krita.instance().actions()
            if action is not None
            and action.objectName() != ACTION
            and any(s.toString() == shortcut for s in action.shortcuts())
        )
        self.results["shortcut"] = {"shortcut": shortcut, "clashes": clashes, "text": ours.text()}
        yield 0

    def scenarios(self, mode: str) -> list:
        """The mode's scenarios, in order: (name, generator function)."""
        if mode == "restart":
            return [("restart", self.restart_checks)]
        if mode == "unfixed":
            self.disable_keeper()
            return [("second_fill", self.second_fill_scenario)]

        def completion(*args, **kwargs):
            return lambda: self.completion_scenario(*args, **kwargs)

        return [
            ("shortcut", self.shortcut_check),
            ("rgba8_rectangle", completion("rgba8_rectangle", "RGBA", "U8", 0)),
            ("rgba16_feathered", completion("rgba16_feathered", "RGBA", "U16", 8)),
            # 16-bit with the 8-bit sRGB curve: converted without Krita's engine (document_io)
            (
                "rgba16_srgb_feathered",
                completion("rgba16_srgb_feathered", "RGBA", "U16", 8, profile=SRGB),
            ),
            ("rgbaf32_feathered", completion("rgbaf32_feathered", "RGBA", "F32", 5)),
            ("graya8_rectangle", completion("graya8_rectangle", "GRAYA", "U8", 0)),
            ("cancelled", completion("cancelled", "RGBA", "U8", 0, cancel=True)),
            ("refusals", self.refusal_scenarios),
            ("no_daemon", self.no_daemon_scenarios),
            ("closed_meanwhile", self.closed_meanwhile_scenario),
            ("source_removed", self.source_removed_scenario),
            # Krita carries on: the same action works again once the daemon is reachable.
            ("after_error", completion("after_error", "RGBA", "U8", 0)),
            ("second_fill", self.second_fill_scenario),
            ("model_choice", self.model_choice_scenario),  # last: it changes the model
        ]


def tiled_pattern(depth: str, width: int, height: int) -> bytes:
    """A large BGRA image fast: 64 distinct rows (shifted stripes) tiled down the image."""
    size = 1 if depth == "U8" else 2
    row = bytearray()
    for x in range(width):
        for value in ((x * 3) % 256, (x * 7) % 256, 255 if (x // 16) % 2 else 40, 255):
            row += (value * (1 if size == 1 else 257)).to_bytes(size, "little")
    rows = [bytes(row[k * 4 * size :] + row[: k * 4 * size]) for k in range(64)]
    return b"".join(rows[y % 64] for y in range(height))


class Tracer(QObject):
    """Where the UI thread's time goes during one run (bench mode "bench-trace" only; it slows
    the UI thread a little): the plugin's own Python calls and the Krita/Qt calls they make,
    timed with a profile hook on the UI thread, and every event Qt delivers (its receiver's
    class and the event type), from an application event filter."""

    OURS = ("glcic_complete", "glcic_plugin_common")

    def __init__(self) -> None:
        super().__init__()
        self.spans = []  # (name, depth, start, end)
        self.events = []  # (time, receiver class, event type)
        self._stack = []

    def start(self) -> None:
        QApplication.instance().installEventFilter(self)
        sys.setprofile(self._profile)

    def stop(self) -> None:
        sys.setprofile(None)
        QApplication.instance().removeEventFilter(self)

    def eventFilter(self, receiver, event) -> bool:  # noqa: N802 (Qt's name)
        try:
            name = receiver.metaObject().className()
        except Exception:  # a receiver half-destroyed
            name = "?"
        self.events.append((time.perf_counter(), name, int(event.type())))
        return False

    def _profile(self, frame, event, arg) -> None:
        if not any(part in frame.f_code.co_filename for part in self.OURS):
            return
        if event == "call":
            self._stack.append((frame.f_code.co_name, time.perf_counter()))
        elif event == "c_call":
            self._stack.append((getattr(arg, "__qualname__", repr(arg)), time.perf_counter()))
        elif event in ("return", "c_return", "c_exception") and self._stack:
            name, began = self._stack.pop()
            self.spans.append((name, len(self._stack), began, time.perf_counter()))

    def summary(self, started: float, stall: tuple) -> dict:
        """The spans of 2 ms or more and the events around the longest stall, in milliseconds
        from the trigger."""

        def ms(moment: float) -> float:
            return round((moment - started) * 1000, 1)

        spans = [
            [name, depth, ms(began), round((ended - began) * 1000, 1)]
            for name, depth, began, ended in sorted(self.spans, key=lambda span: span[2])
            if ended - began >= 0.002 or name == "Document.setActiveNode"
        ]
        silences = []  # stretches of 20 ms or more with no event, and the event before each
        in_stall = []  # those of 5 ms or more inside the longest stall
        for index in range(len(self.events) - 1):
            (moment, name, kind), following = self.events[index], self.events[index + 1][0]
            length = round((following - moment) * 1000, 1)
            if following - moment >= 0.02:
                silences.append([ms(moment), length, name, kind])
            if following - moment >= 0.005 and stall[0] <= following and moment <= stall[1]:
                in_stall.append([ms(moment), length, name, kind])
        overlaps = []  # the plugin's top-level calls during the longest stall
        for name, depth, began, ended in self.spans:
            shared = min(ended, stall[1]) - max(began, stall[0])
            if shared > 0.001 and depth <= 3:
                overlaps.append([name, depth, ms(began), round(shared * 1000, 1)])
        return {
            "stall": [ms(stall[0]), ms(stall[1])],
            "spans": spans,
            "silences_in_stall": in_stall,
            "calls_in_stall": overlaps,
            "silences": sorted(silences, key=lambda item: -item[1])[:8],
        }


class Benchmark(Driver):
    """Times the plugin on large documents: trigger-to-layer wall time, the daemon's own time,
    and the longest the UI thread was kept from its event loop (a 5 ms timer's largest gap)."""

    CASES = (  # (depth, document size, selection box)
        ("U8", (4000, 3000), (1800, 1300, 300, 200)),
        ("U8", (4000, 3000), (1200, 1000, 1500, 1000)),
        ("U16", (4000, 3000), (1800, 1300, 300, 200)),
        ("U16", (4000, 3000), (1200, 1000, 1500, 1000)),
    )

    def __init__(self, trace: bool = False) -> None:
        super().__init__()
        self.trace = trace
        self.tracer = None

    def trigger(self, cancel: bool = False, close=None):
        if not self.trace:
            return (yield from super().trigger(cancel, close))
        self.tracer = Tracer()
        self.tracer.start()
        try:
            return (yield from super().trigger(cancel, close))
        finally:
            self.tracer.stop()

    def scenarios(self, mode: str) -> list:
        self.results["bench"] = []
        return [
            (f"bench {depth} {w}x{h}", lambda case=case: self.case(*case))
            for case in self.CASES
            for depth, _, (_, _, w, h) in [case]
        ]

    def hide_progress(self) -> None:
        """An experiment: the plugin's progress dialog never appears (nor, when it closes,
        uncovers part of Krita's canvas, which Krita must then repaint)."""
        completion = self.completion
        original = type(completion)._show_progress

        def show_progress() -> None:
            original(completion)
            completion.dialog.setMinimumDuration(10**8)

        completion._show_progress = show_progress

    def idle_stall(self, duration_ms: int):
        """The longest gap of the same 5 ms timer while Krita shows the document and its
        selection and nothing else happens: Krita's own baseline (seconds)."""
        longest, last = [0.0], [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            longest[0] = max(longest[0], now - last[0])
            last[0] = now

        ticker = QTimer()
        ticker.setInterval(5)
        ticker.timeout.connect(tick)
        ticker.start()
        yield duration_ms
        ticker.stop()
        return max(longest[0], time.perf_counter() - last[0])

    def case(self, depth: str, size: tuple, box: tuple):
        (width, height), (x, y, w, h) = size, box
        doc = Krita.instance().createDocument(width, height, "bench", "RGBA", depth, "", 72.0)
        yield from self.show(doc)
        paint = doc.rootNode().childNodes()[0]
        paint.setPixelData(tiled_pattern(depth, width, height), 0, 0, width, height)
        yield from self.select(doc, x, y, w, h)
        yield from self.activate(doc, paint)
        yield from self.idle(doc, SETTLE_MS)
        idle = yield from self.idle_stall(1500)
        runs = []
        for _ in range(3):
            outcome = yield from self.trigger()
            runs.append(
                {
                    "outcome": outcome,
                    "wall_s": self.elapsed,
                    "daemon_s": self.completion.last_daemon_seconds,
                    "longest_stall_s": self.longest_stall,
                }
            )
            if self.tracer is not None:
                runs[-1]["trace"] = self.tracer.summary(self.started, self.stall_at)
            yield from self.idle(doc)
            yield from self.fill_settled()
            Krita.instance().action("edit_undo").trigger()
            yield from self.idle(doc)
        self.results["bench"].append(
            {
                "depth": depth,
                "document": [width, height],
                "selection": [w, h],
                "runs": runs,
                "idle_stall_s": idle,
                "space": [doc.colorModel(), doc.colorDepth(), doc.colorProfile()],
            }
        )
        doc.setModified(False)
        yield from self.idle(doc, SETTLE_MS)  # nothing of Krita's own pending for it
        doc.close()
        yield 500


def write_results(results: dict) -> None:
    results_path = os.environ["GLCIC_TEST_RESULTS"]
    temporary = results_path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(results, stream)
    os.replace(temporary, results_path)


class StepMachine:
    """Runs the scenarios one step at a time, each step a fresh timer callback from Krita's
    main event loop (see the module's docstring); records progress after every scenario and
    ends Krita once all are done."""

    def __init__(self, driver: Driver, scenarios: list) -> None:
        self.driver = driver
        self.pending = list(scenarios)
        self.current = None  # (name, generator)
        self.steps = 0

    def start(self) -> None:
        self.next_scenario()

    def record(self, finished: bool, error: str = "") -> None:
        results = dict(self.driver.results)
        results["progress"] = {
            "finished": finished,
            "scenario": self.current[0] if self.current else None,
            "steps": self.steps,
        }
        if error:
            results["error"] = error
        write_results(results)

    def next_scenario(self) -> None:
        if self.current is not None:
            self.record(False)
        if not self.pending:
            self.current = None
            self.record(True)
            os._exit(0)
        name, factory = self.pending.pop(0)
        # Marks Krita's log, so that what Krita prints can be told apart by scenario.
        sys.stderr.write(f"glcic test driver: scenario {name}\n")
        sys.stderr.flush()
        self.current = (name, factory())
        self.resume(None)

    def resume(self, value) -> None:
        name, steps = self.current
        self.steps += 1
        try:
            wait = steps.send(value)
        except StopIteration:
            QTimer.singleShot(0, self.next_scenario)
            return
        except Exception:
            self.record(False, f"in scenario {name}:\n{traceback.format_exc()}")
            os._exit(0)
        if isinstance(wait, Until):
            QTimer.singleShot(POLL_MS, lambda: self.poll(wait))
        else:
            QTimer.singleShot(int(wait), lambda: self.resume(None))

    def poll(self, wait: Until) -> None:
        try:
            held = bool(wait.condition())
        except Exception:
            self.record(False, f"in scenario {self.current[0]}:\n{traceback.format_exc()}")
            os._exit(0)
        if held or time.perf_counter() > wait.deadline:
            self.resume(held)
        else:
            QTimer.singleShot(POLL_MS, lambda: self.poll(wait))


def drive() -> None:
    try:
        mode = os.environ.get("GLCIC_DRIVER_MODE", "test")
        # "bench-trace": the benchmark, also recording where the UI thread's time goes
        bench = mode.startswith("bench")
        driver = Benchmark(trace=mode.startswith("bench-trace")) if bench else Driver()
        if mode == "bench-trace-unkept":  # an experiment: Krita's activation of the layer kept
            driver.disable_keeper()
        if mode == "bench-trace-nodialog":  # an experiment: the progress dialog never shows
            driver.hide_progress()
        machine = StepMachine(driver, driver.scenarios(mode))
    except Exception:
        write_results({"error": traceback.format_exc()})
        os._exit(0)
    machine.start()


class TestDriver(Extension):
    def setup(self) -> None:
        pass

    def createActions(self, window) -> None:  # noqa: N802 (Krita's name)
        QTimer.singleShot(1000, drive)


Krita.instance().addExtension(TestDriver(Krita.instance()))
