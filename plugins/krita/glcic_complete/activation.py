"""Keeping the source layer active after the fill layer is added.

Why this is needed: Krita adds a node through its image's stroke queue, off the UI thread, and
its layer model answers the image's "node added" signal through a queued connection by making the
new node the active one. That activation therefore lands on the UI thread some time after
`addChildNode` has returned (0.2-0.6 s were seen), overriding any `setActiveNode` made right after
the addition. Without a correction, a second "Content-aware complete" would read the mostly
transparent fill layer instead of the painting.

So, after adding the layer, a timer on the UI thread watches the document: first until the
image has actually inserted the layer (it then has a parent; in a large 16-bit document that
takes Krita a second or more, which the UI must not wait through, so nothing here blocks), then
for a short while longer, putting the source back whenever the new layer is found active. The
watch ends once Krita's activation has been undone and the source stayed active for a few
checks, or when it expires. Only the new layer being active is corrected: a layer the user
clicks meanwhile is left alone.
"""

from __future__ import annotations

from krita import Krita

try:
    from PyQt5.QtCore import QObject, QTimer
except ImportError:  # pragma: no cover - Qt 6 builds of Krita
    from PyQt6.QtCore import QObject, QTimer

#: How often the active layer is looked at (milliseconds).
CHECK_INTERVAL_MS = 20
#: How long Krita may take to insert the layer before the watch gives up, and how long the
#: watch lasts once it is inserted (Krita's activation follows within a few event-loop turns).
INSERT_LIMIT_MS = 60_000
WATCH_MS = 1500
#: Once Krita's activation has been undone, how many more checks must find the source active.
SETTLED_CHECKS = 5


def same_node(a, b) -> bool:
    """Whether two libkis Node wrappers stand for the same layer (wrappers are not unique)."""
    return a is not None and b is not None and a.uniqueId() == b.uniqueId()


class KeepSourceActive(QObject):
    """Watches one document after a fill layer was added; see the module's docstring.

    `done` is True once the watch has ended (tests and scripts wait for it).
    """

    def __init__(self, document, source, added, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.document, self.source, self.added = document, source, added
        self.corrected = 0  # how often Krita's activation of the new layer was undone
        self._settled = 0
        self._inserted = False
        self._left_ms = INSERT_LIMIT_MS
        self.done = False
        self._timer = QTimer(self)
        self._timer.setInterval(CHECK_INTERVAL_MS)
        self._timer.timeout.connect(self._check)

    def start(self) -> None:
        self._check()
        if not self.done:
            self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        self.done = True

    def _restore(self) -> bool:
        """Make the source active again if the new layer is; True if that was needed."""
        if self.source.parentNode() is None:  # the source was deleted: nothing to go back to
            return False
        if Krita.instance().activeDocument() != self.document:
            return False  # the user moved to another image: its view is not ours to change
        if same_node(self.document.activeNode(), self.added):
            self.document.setActiveNode(self.source)
            return True
        return False

    def _check(self) -> None:
        self._left_ms -= CHECK_INTERVAL_MS
        try:
            if not self._inserted:
                if self.added.parentNode() is None:  # not in the layer stack yet
                    if self._left_ms <= 0:
                        self.stop()
                    return
                self._inserted = True
                self._left_ms = WATCH_MS
            if self._restore():
                self.corrected += 1
                self._settled = 0
            elif self.corrected:
                self._settled += 1
        except RuntimeError:  # the document was closed meanwhile (its C++ object is gone)
            self.stop()
            return
        if self._settled >= SETTLED_CHECKS or self._left_ms <= 0:
            self.stop()
