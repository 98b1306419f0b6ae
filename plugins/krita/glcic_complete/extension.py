"""The "Content-aware complete" action: checks, progress, cancel, the new layer, and messages.

Everything here runs on Krita's UI thread; the daemon call itself runs in a CompletionJob on a
worker thread, polled by a timer, so Krita stays responsive and the user can cancel.
"""

from __future__ import annotations

import queue

from krita import Extension, Krita

try:  # Krita 5 embeds PyQt5; Qt 6 builds of Krita embed PyQt6 (scoped enum names work in both)
    from PyQt5.QtCore import QObject, Qt, QTimer, pyqtSignal
    from PyQt5.QtWidgets import QApplication, QMessageBox, QProgressDialog, QWidget
except ImportError:  # pragma: no cover - no Qt 6 Krita to test with here
    from PyQt6.QtCore import QObject, Qt, QTimer, pyqtSignal
    from PyQt6.QtWidgets import QApplication, QMessageBox, QProgressDialog, QWidget

from . import document_io, settings
from .activation import KeepSourceActive
from .settings_dialog import SettingsDialog

try:  # needs pyzmq and msgpack in Krita's Python; without them the action explains, not vanishes
    from .glcic_plugin_common import (
        PROGRESS_STAGES,
        UNKNOWN_MODEL,
        CompletionJob,
        Rect,
        Request,
        context_region,
        region_mask,
        sub_rows,
    )

    MISSING_MODULE = ""
except ImportError as error:  # a Krita without pyzmq or msgpack (see run())
    MISSING_MODULE = str(error)

ACTION_ID = "glcic_content_aware_complete"
SETTINGS_ACTION_ID = "glcic_content_aware_complete_settings"
TITLE = "Content-aware complete"
SETTINGS_TITLE = "Content-aware complete settings…"
LAYER_NAME = "Content-aware fill"
POLL_INTERVAL_MS = 50
INFORMATION, WARNING = QMessageBox.Icon.Information, QMessageBox.Icon.Warning


class UserError(Exception):
    """Something the user can fix; the message says how."""


class ContentAwareComplete(QObject):
    """Runs one completion at a time for the current document."""

    #: Emitted when a run ends: "done", "cancelled" or "error" (used by tests and scripts).
    finished = pyqtSignal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.job: CompletionJob | None = None
        self.timer = QTimer(self)
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.timeout.connect(self._poll)
        self.dialog: QProgressDialog | None = None
        self.last_message = ""
        self.last_daemon_seconds = 0.0  # the daemon's own time for the last fill (benchmarks)
        self.last_model: str | None = None  # the model asked for in the last run (None: default)
        self.keeper: KeepSourceActive | None = None  # keeps the source active after a fill

    # -- starting --

    def run(self) -> None:
        """The action: complete the active document's selection from its active layer."""
        if MISSING_MODULE:
            self._message(
                f"{TITLE} cannot talk to the glcic daemon: Krita's Python lacks a module it "
                f"needs ({MISSING_MODULE}). On Linux install python3-zmq and python3-msgpack "
                "(e.g. sudo apt install python3-zmq python3-msgpack); for a Krita with its own "
                "Python (Windows, macOS, AppImage) run glcic-daemon install-plugin krita "
                "--python X.Y with that Python's version.",
                WARNING,
            )
            self.finished.emit("error")
            return
        if self.job is not None:
            self._message("A content-aware completion is already running.", INFORMATION)
            return
        try:
            self._start(Krita.instance().activeDocument())
        except UserError as error:
            self._message(str(error), INFORMATION)
            self.finished.emit("error")

    def _start(self, document) -> None:
        if document is None:
            raise UserError("Open an image first.")
        node = document.activeNode()
        if node is None or node.type() != "paintlayer":
            raise UserError(
                "Select a paint layer to complete from: the fill is computed from the active "
                "paint layer's pixels."
            )
        selection = document.selection()
        if selection is None or selection.width() <= 0 or selection.height() <= 0:
            raise UserError("Select the region to fill first (for example with the freehand "
                            "or rectangle selection tool).")  # fmt: skip
        image = Rect(0, 0, document.width(), document.height())
        box = Rect(selection.x(), selection.y(), selection.width(), selection.height())
        box = box.intersected(image)
        if box.empty:
            raise UserError("The selection lies outside the image.")
        self.document, self.node, self.box, self.image = document, node, box, image
        self.selection = bytes(selection.pixelData(box.x, box.y, box.width, box.height))
        if self.selection.count(0) == len(self.selection):  # C speed, unlike any()
            raise UserError("The selection is empty: select the region to fill first.")
        self.last_model = settings.chosen_model()
        self.job = CompletionJob("krita", model=self.last_model)
        self.job.start()
        self.timer.start()
        self._show_progress()

    # -- the conversation with the worker --

    def _poll(self) -> None:
        job = self.job
        if job is None:
            return
        while True:
            try:
                event = job.events.get_nowait()
            except queue.Empty:
                return
            kind = event[0]
            if kind == "need_pixels":
                self._provide_pixels(job, int(event[1]))
                if self.job is not job:
                    return
            elif kind == "progress":
                self._progress(str(event[1]), float(event[2]))
            elif kind == "result":
                self._finish(self._apply, event[1], event[2])
                return
            elif kind == "cancelled":
                self._finish(None)
                self.finished.emit("cancelled")
                return
            elif kind == "error":
                self._finish(None)
                message = str(event[1])
                if len(event) > 2 and event[2] == UNKNOWN_MODEL and self.last_model:
                    message = (
                        f"The model chosen for {TITLE}, “{self.last_model}”, is not among the "
                        f"glcic daemon's models any more. Choose another in Tools > Scripts > "
                        f"{SETTINGS_TITLE}\n\n{message}"
                    )
                self._message(message, WARNING)
                self.finished.emit("error")
                return

    def _provide_pixels(self, job: CompletionJob, max_hole_side: int) -> None:
        """Read the selection's box plus the context the network looks at, no more."""
        try:
            region = context_region(self.box, self.image, max_hole_side)
            rgba = document_io.read_rgba8(self.node, region)
            request = Request(region, rgba, region_mask(self.selection, self.box, region))
        except Exception as error:  # e.g. the layer was deleted meanwhile
            job.provide(None)  # the worker ends; its "cancelled" is no longer polled
            self._finish(None)
            self._message(f"Could not read the layer's pixels: {error}", WARNING)
            self.finished.emit("error")
            return
        job.provide(request)

    def _apply(self, request: Request, result) -> None:
        """Put the daemon's changed rectangle on a new layer, with the selection as alpha."""
        self.last_daemon_seconds = result.seconds
        if not any(
            open_document == self.document for open_document in Krita.instance().documents()
        ):
            raise UserError("The image was closed before the fill arrived; nothing was added.")
        changed = Rect(result.x, result.y, result.width, result.height).translated(
            request.region.x, request.region.y
        )
        inside = changed.intersected(self.box)
        if inside.empty:
            raise UserError("The daemon returned nothing inside the selection.")
        rgba = sub_rows(result.rgba, result.width, inside.translated(-changed.x, -changed.y), 4)
        alpha = sub_rows(
            self.selection, self.box.width, inside.translated(-self.box.x, -self.box.y)
        )
        layer = document_io.add_fill_layer(
            self.document, self.node, inside, rgba, alpha, LAYER_NAME
        )
        # Krita may make the new layer active a moment later; the source must stay active, so
        # the next completion reads from it again (see activation.py).
        if self.keeper is not None:
            self.keeper.stop()
        self.keeper = KeepSourceActive(self.document, self.node, layer, self)
        self.keeper.start()
        self.finished.emit("done")

    def _finish(self, apply, *args) -> None:
        self.timer.stop()
        self.job = None
        if self.dialog is not None:
            self.dialog.reset()
            self.dialog.deleteLater()
            self.dialog = None
        if apply is not None:
            try:
                apply(*args)
            except UserError as error:
                self._message(str(error), WARNING)
                self.finished.emit("error")
            except Exception as error:
                self._message(f"Could not add the completed layer: {error}", WARNING)
                self.finished.emit("error")

    # -- what the user sees --

    def _show_progress(self) -> None:
        dialog = QProgressDialog("Connecting to the glcic daemon…", "Cancel", 0, 100, _window())
        dialog.setWindowTitle(TITLE)
        dialog.setWindowModality(Qt.WindowModality.NonModal)
        dialog.setMinimumDuration(400)
        dialog.setAutoClose(False)
        dialog.setAutoReset(False)
        dialog.canceled.connect(self.cancel)
        dialog.setValue(0)
        self.dialog = dialog

    def _progress(self, stage: str, fraction: float) -> None:
        if self.dialog is not None:
            self.dialog.setLabelText(PROGRESS_STAGES.get(stage, stage))
            self.dialog.setValue(round(100 * max(0.0, min(1.0, fraction))))

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel()
            if self.dialog is not None:
                self.dialog.setLabelText("Cancelling…")

    def _message(self, text: str, icon) -> None:
        """A non-blocking message box: Krita carries on while it is shown."""
        self.last_message = text
        box = QMessageBox(icon, TITLE, text, QMessageBox.StandardButton.Ok, _window())
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.setWindowModality(Qt.WindowModality.NonModal)
        box.show()


def _window() -> QWidget | None:
    window = Krita.instance().activeWindow()
    if window is not None:
        return window.qwindow()
    return QApplication.activeWindow()


class ContentAwareCompleteExtension(Extension):
    """Registers the action; the work is in ContentAwareComplete."""

    def __init__(self, parent) -> None:
        super().__init__(parent)
        self.completion = ContentAwareComplete(self)
        self.settings_dialog: SettingsDialog | None = None

    def setup(self) -> None:
        pass

    def createActions(self, window) -> None:  # noqa: N802 (Krita's name)
        action = window.createAction(ACTION_ID, TITLE, "tools/scripts")
        action.triggered.connect(self.completion.run)
        settings_action = window.createAction(SETTINGS_ACTION_ID, SETTINGS_TITLE, "tools/scripts")
        settings_action.triggered.connect(self.show_settings)

    def show_settings(self) -> None:
        """Open the settings dialog, or bring the open one forward."""
        if self.settings_dialog is not None and self.settings_dialog.isVisible():
            self.settings_dialog.raise_()
            self.settings_dialog.activateWindow()
            return
        dialog = SettingsDialog(_window())
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.setWindowModality(Qt.WindowModality.NonModal)
        dialog.finished.connect(lambda _result, closed=dialog: self._settings_closed(closed))
        self.settings_dialog = dialog
        dialog.show()

    def _settings_closed(self, dialog: SettingsDialog) -> None:
        if self.settings_dialog is dialog:  # not a newer one opened meanwhile
            self.settings_dialog = None
