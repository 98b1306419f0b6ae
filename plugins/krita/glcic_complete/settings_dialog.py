"""The "Content-aware complete settings…" dialog: which of the daemon's models to complete with.

The model list comes from the daemon, which may be slow, stuck or absent; the question is asked
on a worker thread and its answer polled by a timer, so Krita never waits on it. The dialog is a
form: options added later ("adapt to this image") become further rows of the same form.
"""

from __future__ import annotations

import queue
import threading

try:
    from PyQt5.QtCore import Qt, QTimer
    from PyQt5.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel
except ImportError:  # pragma: no cover - Qt 6 builds of Krita
    from PyQt6.QtCore import Qt, QTimer
    from PyQt6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel

from . import settings

try:  # needs pyzmq and msgpack in Krita's Python, as the action does
    from .glcic_plugin_common import REQUEST_TIMEOUT, daemon_models, describe_client_error

    MISSING_MODULE = ""
except ImportError as error:
    MISSING_MODULE = str(error)

TITLE = "Content-aware complete settings"
DEFAULT_LABEL = "Daemon's default"
POLL_INTERVAL_MS = 50


def fetch_models_in_background() -> queue.Queue:
    """Ask the daemon for its models on a worker thread; the queue receives one answer:
    ("models", names, default) or ("error", message)."""
    answers: queue.Queue = queue.Queue(maxsize=1)

    def ask() -> None:
        try:
            names, default = daemon_models(REQUEST_TIMEOUT)
            answers.put(("models", names, default))
        except Exception as error:  # every failure must reach the dialog, not end the thread
            try:
                answers.put(("error", describe_client_error(error, "krita")))
            except Exception:  # not a client error describe_client_error knows
                answers.put(("error", f"Unexpected problem: {type(error).__name__}: {error}"))

    threading.Thread(target=ask, name="glcic-models", daemon=True).start()
    return answers


class SettingsDialog(QDialog):
    """Non-modal: Krita stays usable while it is open. OK remembers the choice, Cancel not."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle(TITLE)
        self.remembered = settings.chosen_model()
        self.status = "loading"  # then "ready" or "error" (tests and scripts look at it)

        self.model = QComboBox(self)
        self.model.setObjectName("glcic_model")
        self.model.addItem(DEFAULT_LABEL, "")
        if self.remembered:
            self.model.addItem(self.remembered, self.remembered)
            self.model.setCurrentIndex(1)
        self.note = QLabel("Asking the glcic daemon for its models…", self)
        self.note.setObjectName("glcic_note")
        self.note.setWordWrap(True)
        self.note.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)

        form = QFormLayout()
        form.addRow("Model:", self.model)
        form.addRow("", self.note)
        # Later options ("Adapt to this image", ...) are added here as form rows.
        self.form = form
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel, self
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.setLayout(form)
        self.setMinimumWidth(420)

        self._answers: queue.Queue | None = None
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.timeout.connect(self._poll)
        if MISSING_MODULE:
            self._show_error(
                "Krita's Python lacks a module the plugin needs to talk to the glcic daemon "
                f"({MISSING_MODULE}); install python3-zmq and python3-msgpack, or run "
                "glcic-daemon install-plugin krita --python X.Y."
            )
        else:
            self._answers = fetch_models_in_background()
            self._timer.start()

    def selected_model(self) -> str | None:
        """The model the combo box shows: a name, or None for the daemon's default."""
        return self.model.currentData() or None

    def accept(self) -> None:
        settings.choose_model(self.selected_model())
        super().accept()

    def done(self, result: int) -> None:  # accept, reject and closing all end here
        self._timer.stop()
        super().done(result)

    def _poll(self) -> None:
        try:
            answer = self._answers.get_nowait()
        except queue.Empty:
            return
        self._timer.stop()
        if answer[0] == "models":
            self._show_models(answer[1], answer[2])
        else:
            self._show_error(answer[1])

    def _show_models(self, names: list[str], default: str | None) -> None:
        current = self.selected_model()
        self.model.clear()
        label = f"{DEFAULT_LABEL} ({default})" if default else DEFAULT_LABEL
        self.model.addItem(label, "")
        for name in names:
            self.model.addItem(name, name)
        if current and current not in names:
            self.model.addItem(f"{current} (no longer in the daemon's model directory)", current)
            self.note.setText(
                f"The model you chose, “{current}”, is no longer in the glcic daemon's model "
                "directory: completions will fail until you choose another model here (it may "
                "have been removed or renamed; `glcic-daemon models` lists them)."
            )
        else:
            count = len(names)
            self.note.setText(
                f"{count} model{'s' if count != 1 else ''} in the glcic daemon's model directory."
            )
        self.model.setCurrentIndex(max(0, self.model.findData(current or "")))
        self.status = "ready"

    def _show_error(self, message: str) -> None:
        self.note.setText(
            f"{message}\n\nThe list shows only the daemon's default and your current choice "
            "until the daemon answers; open this dialog again then."
        )
        self.status = "error"
