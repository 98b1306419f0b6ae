"""Drives glcic's Krita plugin inside a real Krita (under Xvfb) and records what it sees.

tests/test_krita_plugin.py installs this next to the plugin, starts Krita and reads the JSON
written to $GLCIC_TEST_RESULTS; the assertions live there. Once Krita's window exists, each
scenario builds a document, paints, selects, triggers the plugin's registered action, waits for
it to finish and records layers, pixels and messages; then undo is triggered and the layers
recorded again. The driver ends the process itself (Krita's file_quit does not, headless).
"""

import json
import os
import struct
import time
import traceback

from krita import Extension, Krita, Selection
from PyQt5.QtCore import QEventLoop, QThread, QTimer
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


class Driver:
    def __init__(self) -> None:
        self.window = Krita.instance().activeWindow()
        self.results = {"scenarios": {}}
        import glcic_complete

        self.extension = glcic_complete.EXTENSION
        self.completion = glcic_complete.EXTENSION.completion

    def trigger(self, cancel: bool = False, close=None) -> str:
        """Trigger the registered action and wait until the plugin reports how it ended;
        `cancel` presses the progress dialog's Cancel as soon as the action has returned;
        `close` is a document to close at that moment, before the fill arrives."""
        loop = QEventLoop()
        outcome = ["timeout"]
        ticks = [0]

        def finished(value: str) -> None:
            outcome[0] = value
            loop.quit()

        last = [time.perf_counter()]
        self.longest_stall = 0.0

        def tick() -> None:
            ticks[0] += 1
            now = time.perf_counter()
            self.longest_stall = max(self.longest_stall, now - last[0])
            last[0] = now

        ticker = QTimer()
        ticker.setInterval(5)
        ticker.timeout.connect(tick)
        ticker.start()
        self.completion.finished.connect(finished)
        QTimer.singleShot(WAIT_MS, loop.quit)
        started = time.perf_counter()
        Krita.instance().action(ACTION).trigger()
        if cancel and self.completion.dialog is not None:
            self.completion.dialog.findChild(QPushButton).click()
        if close is not None:
            close.close()
        if self.completion.job is not None:  # still running: the UI thread came back at once
            loop.exec_()
        self.elapsed = time.perf_counter() - started
        self.longest_stall = max(self.longest_stall, time.perf_counter() - last[0])
        ticker.stop()
        self.completion.finished.disconnect(finished)
        self.ui_ticks = ticks[0]
        return outcome[0]

    def show(self, doc) -> None:
        """Open `doc` in a view and make that view the active one, as opening an image does."""
        window = self.window.qwindow()
        # As a click on Krita's window would: the window active, then the new view in it.
        window.activateWindow()
        QApplication.setActiveWindow(window)
        view = self.window.addView(doc)
        self.window.showView(view)
        view.setVisible()
        self.wait_until(lambda: Krita.instance().activeDocument() == doc, 5000)

    def new_document(self, model: str, depth: str, name: str):
        doc = Krita.instance().createDocument(WIDTH, HEIGHT, name, model, depth, "", 72.0)
        self.show(doc)
        root = doc.rootNode()
        background = root.childNodes()[0]
        paint = doc.createNode("paint", "paintlayer")
        root.addChildNode(paint, background)
        top = doc.createNode("top", "paintlayer")
        root.addChildNode(top, paint)
        paint.setPixelData(pattern(model, depth, WIDTH, HEIGHT), 0, 0, WIDTH, HEIGHT)
        paint.move(6, -4)  # a layer offset: its pixels no longer start at the image origin
        doc.waitForDone()
        self.activate(doc, paint)
        return doc, paint

    def activate(self, doc, node) -> None:
        """Make `node` active; the GUI activates newly added layers a little later, so wait."""
        for _ in range(100):
            QApplication.processEvents()
            doc.setActiveNode(node)
            QApplication.processEvents()
            if doc.activeNode() is not None and doc.activeNode().name() == node.name():
                return
            QThread.msleep(20)

    def settle(self, milliseconds: int = SETTLE_MS) -> None:
        """Let Krita's event loop run undisturbed, as it does between a user's clicks."""
        loop = QEventLoop()
        QTimer.singleShot(milliseconds, loop.quit)
        loop.exec_()

    def wait_until(self, condition, timeout_ms: int = 20_000) -> bool:
        """Run the event loop until `condition()` holds; False if it never did."""
        deadline = time.perf_counter() + timeout_ms / 1000
        while time.perf_counter() < deadline:
            if condition():
                return True
            self.settle(20)
        return bool(condition())

    def fills(self, doc) -> list:
        """The pixels of every fill layer, bottom to top, as hex."""
        return [
            bytes(node.pixelData(0, 0, WIDTH, HEIGHT)).hex()
            for node in doc.rootNode().childNodes()
            if node.name() == FILL
        ]

    def selected_document(self, name: str):
        """An 8-bit RGBA document with the same pattern and rectangle every time."""
        doc, paint = self.new_document("RGBA", "U8", name)
        selection = Selection()
        selection.select(50, 30, 48, 40, 255)
        doc.setSelection(selection)
        doc.waitForDone()
        self.activate(doc, paint)
        return doc, paint

    def second_fill_scenario(self):
        """Complete, give Krita's own event loop the time a user's next click would, then
        complete again with the same selection: the second fill must come from the source
        layer, as the first did.

        A generator: each `yield` hands control back to Krita's main event loop for that many
        milliseconds (see drive()). Krita delivers its image-to-UI notifications (the layers
        docker learning of a new layer, and then making it the active one) only there: inside
        an event handler, such as the timer running this driver, they are postponed until the
        handler returns, so no nested event loop (settle()) ever lets them through.
        """
        doc, paint = self.selected_document("second fill")
        yield SETTLE_MS  # Krita's UI catches up with the document's layers, as after a load
        self.activate(doc, paint)
        active_before = self.active_name(doc)
        first = self.trigger()
        added = FILL in self.record_layers(doc)
        yield SETTLE_MS  # the user looks at the fill before completing again
        keeper = self.completion.keeper
        active_between = self.active_name(doc)
        second = self.trigger()
        doc.waitForDone()
        yield SETTLE_MS
        self.results["scenarios"]["second_fill"] = {
            "outcomes": [first, second],
            "message": self.completion.last_message,
            "added": added,
            "active_before": active_before,
            "active_between": active_between,
            "corrections": keeper.corrected if keeper is not None else None,
            "active_after_second": self.active_name(doc),
            "layers": self.record_layers(doc),
            "fills": self.fills(doc),
            "selection": bytes(doc.selection().pixelData(0, 0, WIDTH, HEIGHT)).hex(),
        }
        doc.setModified(False)

    def active_name(self, doc):
        node = doc.activeNode()
        return node.name() if node is not None else None

    def disable_keeper(self) -> None:
        """The control run: the plugin's fix (activation.KeepSourceActive) does nothing, so
        the second-fill scenario shows what Krita itself does with the new layer."""
        from glcic_complete import activation

        activation.KeepSourceActive.start = activation.KeepSourceActive.stop

    def open_settings(self) -> dict:
        """Open the settings dialog through its action and wait for the daemon's model list."""
        Krita.instance().action(SETTINGS_ACTION).trigger()
        dialog = self.extension.settings_dialog
        status_after_trigger = dialog.status
        self.wait_until(lambda: dialog.status != "loading")
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

    def model_choice_scenario(self) -> None:
        """Choose the daemon's second model in the settings dialog, then complete: the daemon
        must run that model. The fill to compare with is the same one from the default."""
        doc, _ = self.selected_document("default model")
        default_outcome = self.trigger()
        self.settle(200)
        default_fill = self.fills(doc)
        doc.setModified(False)
        seen = self.open_settings()
        dialog = seen.pop("dialog")
        dialog.model.setCurrentIndex(dialog.model.findData(OTHER_MODEL))
        dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
        self.settle(200)
        doc, _ = self.selected_document("chosen model")
        outcome = self.trigger()
        self.settle(200)
        self.results["scenarios"]["model_choice"] = {
            **seen,
            "default_outcome": default_outcome,
            "default_fill": default_fill,
            "outcome": outcome,
            "message": self.completion.last_message,
            "asked_for": self.completion.last_model,
            "stored": Krita.instance().readSetting("glcic", "model", ""),
            "fill": self.fills(doc),
        }
        doc.setModified(False)

    def restart_checks(self) -> None:
        """A Krita started again (same user): the choice is remembered and used; once its model
        is gone from the daemon, the dialog and the action say so clearly."""
        remembered = Krita.instance().readSetting("glcic", "model", "")
        doc, _ = self.selected_document("after restart")
        outcome = self.trigger()
        self.settle(200)
        entry = {
            "remembered": remembered,
            "outcome": outcome,
            "message": self.completion.last_message,
            "asked_for": self.completion.last_model,
            "fill": self.fills(doc),
        }
        doc.setModified(False)
        os.remove(os.path.join(os.environ["GLCIC_HOME"], "models", OTHER_MODEL + ".safetensors"))
        doc, _ = self.selected_document("model removed")
        self.messages()
        entry["removed_outcome"] = self.trigger()
        QApplication.processEvents()
        entry["removed_message"] = self.completion.last_message
        entry["removed_shown"] = self.messages()
        entry["removed_layers"] = self.record_layers(doc)
        doc.setModified(False)
        seen = self.open_settings()
        seen.pop("dialog").reject()
        entry["dialog_after_removal"] = seen
        self.results["restart"] = entry

    def messages(self) -> list:
        """Texts of visible message boxes, which are then closed."""
        texts = []
        for widget in QApplication.topLevelWidgets():
            if isinstance(widget, QMessageBox) and widget.isVisible():
                texts.append(widget.text())
                widget.close()
        return texts

    def record_layers(self, doc) -> list:
        return [
            node.name() for node in doc.rootNode().childNodes() if node.type() != "selectionmask"
        ]

    def completion_scenario(
        self, key: str, model: str, depth: str, feather: int, cancel: bool = False
    ) -> None:
        doc, paint = self.new_document(model, depth, key)
        selection = Selection()
        selection.select(50, 30, 48, 40, 255)
        if feather:
            selection.feather(feather)
        doc.setSelection(selection)
        doc.waitForDone()
        before = bytes(paint.pixelData(-20, -20, WIDTH + 40, HEIGHT + 40))
        layers_before = self.record_layers(doc)
        self.activate(doc, paint)
        active_before = doc.activeNode().name()
        outcome = self.trigger(cancel)
        doc.waitForDone()
        layers_after = self.record_layers(doc)
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
        }
        fill = next(
            (n for n in doc.rootNode().childNodes() if n.name() == "Content-aware fill"), None
        )
        if fill is not None:
            entry["fill_space"] = [fill.colorModel(), fill.colorDepth(), fill.colorProfile()]
            entry["fill_pixels"] = bytes(fill.pixelData(0, 0, WIDTH, HEIGHT)).hex()
            entry["selection"] = bytes(doc.selection().pixelData(0, 0, WIDTH, HEIGHT)).hex()
            QApplication.processEvents()
            entry["active_after"] = doc.activeNode().name()
            Krita.instance().action("edit_undo").trigger()
            doc.waitForDone()
            QApplication.processEvents()
            entry["layers_after_undo"] = self.record_layers(doc)
        self.results["scenarios"][key] = entry
        doc.setModified(False)

    def refusal_scenario(self, key: str, setup) -> None:
        doc, _ = self.new_document("RGBA", "U8", key)
        setup(doc)
        layers_before = self.record_layers(doc)
        self.messages()
        outcome = self.trigger()
        QApplication.processEvents()
        self.results["scenarios"][key] = {
            "outcome": outcome,
            "message": self.completion.last_message,
            "shown": self.messages(),
            "layers_before": layers_before,
            "layers_after": self.record_layers(doc),
        }
        doc.setModified(False)

    def closed_meanwhile_scenario(self) -> None:
        """The user closes the image while the daemon works: nothing to add, and words say so."""
        doc, _ = self.new_document("RGBA", "U8", "closed meanwhile")
        selection = Selection()
        selection.select(30, 30, 40, 30, 255)
        doc.setSelection(selection)
        doc.waitForDone()
        doc.setModified(False)
        self.messages()
        outcome = self.trigger(close=doc)
        QApplication.processEvents()
        self.results["scenarios"]["closed_meanwhile"] = {
            "outcome": outcome,
            "message": self.completion.last_message,
            "shown": self.messages(),
        }

    def source_removed_scenario(self) -> None:
        """The user deletes the source layer while the daemon works: the fill still arrives,
        on top of the stack, rather than being lost."""
        doc, paint = self.new_document("RGBA", "U8", "source removed")
        selection = Selection()
        selection.select(30, 30, 40, 30, 255)
        doc.setSelection(selection)
        doc.waitForDone()
        original = self.completion._provide_pixels

        def provide_then_delete(job, limit) -> None:
            original(job, limit)
            paint.remove()
            doc.waitForDone()

        self.completion._provide_pixels = provide_then_delete
        try:
            outcome = self.trigger()
        finally:
            del self.completion._provide_pixels  # the class's method again
        QApplication.processEvents()
        self.results["scenarios"]["source_removed"] = {
            "outcome": outcome,
            "message": self.completion.last_message if outcome != "done" else "",
            "layers_after": self.record_layers(doc),
        }
        doc.setModified(False)

    def shortcut_check(self) -> None:
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

    def run(self):
        """Every scenario; a generator, as second_fill_scenario() is (see drive())."""
        self.shortcut_check()
        self.completion_scenario("rgba8_rectangle", "RGBA", "U8", 0)
        self.completion_scenario("rgba16_feathered", "RGBA", "U16", 8)
        self.completion_scenario("rgbaf32_feathered", "RGBA", "F32", 5)
        self.completion_scenario("graya8_rectangle", "GRAYA", "U8", 0)
        self.completion_scenario("cancelled", "RGBA", "U8", 0, cancel=True)

        def no_selection(doc) -> None:
            doc.setSelection(Selection())

        def group_active(doc) -> None:
            group = doc.createGroupLayer("group")
            doc.rootNode().addChildNode(group, None)
            selection = Selection()
            selection.select(10, 10, 20, 20, 255)
            doc.setSelection(selection)
            doc.waitForDone()
            self.activate(doc, group)

        self.refusal_scenario("no_selection", no_selection)
        self.refusal_scenario("not_a_paint_layer", group_active)

        saved = os.environ.get("GLCIC_CONNECTION_FILE")
        os.environ["GLCIC_CONNECTION_FILE"] = os.path.join(os.environ["HOME"], "no-daemon.json")

        def rectangle(doc) -> None:
            selection = Selection()
            selection.select(20, 20, 30, 30, 255)
            doc.setSelection(selection)
            doc.waitForDone()

        self.refusal_scenario("no_daemon", rectangle)
        seen = self.open_settings()
        seen.pop("dialog").reject()
        self.results["scenarios"]["settings_without_daemon"] = seen
        if saved is None:
            del os.environ["GLCIC_CONNECTION_FILE"]
        else:
            os.environ["GLCIC_CONNECTION_FILE"] = saved
        self.closed_meanwhile_scenario()
        self.source_removed_scenario()
        # Krita carries on: the same action works again once the daemon is reachable.
        self.completion_scenario("after_error", "RGBA", "U8", 0)
        yield from self.second_fill_scenario()
        self.model_choice_scenario()  # last: it changes the model later runs use


def tiled_pattern(depth: str, width: int, height: int) -> bytes:
    """A large BGRA image fast: 64 distinct rows (shifted stripes) tiled down the image."""
    size = 1 if depth == "U8" else 2
    row = bytearray()
    for x in range(width):
        for value in ((x * 3) % 256, (x * 7) % 256, 255 if (x // 16) % 2 else 40, 255):
            row += (value * (1 if size == 1 else 257)).to_bytes(size, "little")
    rows = [bytes(row[k * 4 * size :] + row[: k * 4 * size]) for k in range(64)]
    return b"".join(rows[y % 64] for y in range(height))


class Benchmark(Driver):
    """Times the plugin on large documents: trigger-to-layer wall time, the daemon's own time,
    and the longest the UI thread was kept from its event loop (a 5 ms timer's largest gap)."""

    CASES = (  # (depth, document size, selection box)
        ("U8", (4000, 3000), (1800, 1300, 300, 200)),
        ("U8", (4000, 3000), (1200, 1000, 1500, 1000)),
        ("U16", (4000, 3000), (1800, 1300, 300, 200)),
        ("U16", (4000, 3000), (1200, 1000, 1500, 1000)),
    )

    def run(self) -> None:
        self.results["bench"] = []
        for depth, (width, height), (x, y, w, h) in self.CASES:
            doc = Krita.instance().createDocument(width, height, "bench", "RGBA", depth, "", 72.0)
            self.show(doc)
            root = doc.rootNode()
            paint = root.childNodes()[0]
            paint.setPixelData(tiled_pattern(depth, width, height), 0, 0, width, height)
            selection = Selection()
            selection.select(x, y, w, h, 255)
            doc.setSelection(selection)
            doc.waitForDone()
            self.activate(doc, paint)
            runs = []
            for _ in range(3):
                outcome = self.trigger()
                doc.waitForDone()
                runs.append(
                    {
                        "outcome": outcome,
                        "wall_s": self.elapsed,
                        "daemon_s": self.completion.last_daemon_seconds,
                        "longest_stall_s": self.longest_stall,
                    }
                )
                Krita.instance().action("edit_undo").trigger()
                doc.waitForDone()
            self.results["bench"].append(
                {"depth": depth, "document": [width, height], "selection": [w, h], "runs": runs}
            )
            doc.setModified(False)
            doc.close()


def write_results(results: dict) -> None:
    results_path = os.environ["GLCIC_TEST_RESULTS"]
    temporary = results_path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as stream:
        json.dump(results, stream)
    os.replace(temporary, results_path)
    os._exit(0)


def drive() -> None:
    """Run the mode's steps. A step that is a generator is resumed from a fresh timer after
    each `yield milliseconds`, so that in between this handler has returned to Krita's main
    event loop, as a plugin's handlers do for a user (Krita postpones some of its own UI
    updates while any event handler runs; see Driver.second_fill_scenario)."""
    try:
        mode = os.environ.get("GLCIC_DRIVER_MODE")
        driver = Benchmark() if mode == "bench" else Driver()
        if mode == "restart":
            steps = driver.restart_checks()
        elif mode == "unfixed":
            driver.disable_keeper()
            steps = driver.second_fill_scenario()
        else:
            steps = driver.run()
    except Exception:
        write_results({"error": traceback.format_exc()})
        return
    if steps is None:
        write_results(driver.results)
        return

    def resume() -> None:
        try:
            milliseconds = next(steps)
        except StopIteration:
            write_results(driver.results)
        except Exception:
            write_results({"error": traceback.format_exc()})
        else:
            QTimer.singleShot(milliseconds, resume)

    resume()


class TestDriver(Extension):
    def setup(self) -> None:
        pass

    def createActions(self, window) -> None:  # noqa: N802 (Krita's name)
        QTimer.singleShot(1000, drive)


Krita.instance().addExtension(TestDriver(Krita.instance()))
