"""Reading a layer and writing the fill layer, in whatever colour space the document uses.

The daemon works on 8-bit sRGB RGBA. An 8-bit sRGB RGBA layer is read as it is, and so, but
for its depth, is a 16-bit integer RGBA layer with the same sRGB profile: halving or doubling
each channel's bytes needs no colour engine. Any other depth, model or profile (Krita's default
16-bit profile, whose curve is linear; 16/32-bit float, grayscale, CMYK, wide-gamut profiles) is
converted by Krita's own colour engine on a scratch document that holds a copy of just the
region, and the fill is converted back to the document's colour space the same way. Creating and
closing those scratch documents holds Krita's UI thread for 0.1-0.5 s each (Krita sets up colour
transforms and registers the document's resources), which the 16-bit shortcut avoids. The user's
document is only touched once, by adding the finished layer.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from krita import Document, Krita, Node

try:
    from PyQt5.QtCore import QTimer
except ImportError:  # pragma: no cover - Qt 6 builds of Krita
    from PyQt6.QtCore import QTimer

from .glcic_plugin_common import Rect, fill_layer_pixels, swap_red_blue

_SRGB_PROFILES = ("sRGB-elle-V2-srgbtrc.icc", "sRGB built-in")
_DAEMON_SPACE = ("RGBA", "U8", "sRGB-elle-V2-srgbtrc.icc")

if TYPE_CHECKING:  # annotations only: Krita 5.1 bundles Python 3.8, where tuple[...] fails
    ColorSpace = tuple[str, str, str]


def node_space(node: Node) -> ColorSpace:
    return (node.colorModel(), node.colorDepth(), node.colorProfile())


def document_space(document: Document) -> ColorSpace:
    return (document.colorModel(), document.colorDepth(), document.colorProfile())


def is_daemon_space(space: ColorSpace) -> bool:
    model, depth, profile = space
    return model == "RGBA" and depth == "U8" and profile in _SRGB_PROFILES


def is_srgb16(space: ColorSpace) -> bool:
    """16-bit integer RGBA with the daemon's sRGB profile (not Krita's default 16-bit profile,
    sRGB-elle-V2-g10.icc, whose curve is linear): only the depth differs, which needs no colour
    engine (see narrow16 and widen8). Krita stores the channels in the machine's byte order,
    read here as little-endian."""
    model, depth, profile = space
    return model == "RGBA" and depth == "U16" and profile in _SRGB_PROFILES and _LITTLE_ENDIAN


_LITTLE_ENDIAN = sys.byteorder == "little"


def narrow16(raw: bytes) -> bytes:
    """16-bit channels to 8-bit: each value's high byte (v >> 8, within 1 of Krita's own
    rounding, v / 257), at C speed. Only for what the daemon reads."""
    return raw[1::2]


def widen8(pixels: bytes) -> bytes:
    """8-bit channels to 16-bit: v * 257 (v in both bytes), exactly as Krita converts them."""
    out = bytearray(2 * len(pixels))
    out[0::2] = pixels
    out[1::2] = pixels
    return bytes(out)


def convert(
    pixels: bytes, width: int, height: int, source: ColorSpace, target: ColorSpace
) -> bytes:
    """Convert raw pixels between colour spaces with Krita's engine, on a scratch document."""
    scratch = Krita.instance().createDocument(
        width, height, "glcic colour conversion", source[0], source[1], source[2], 72.0
    )
    try:
        layer = scratch.topLevelNodes()[0]
        layer.setPixelData(pixels, 0, 0, width, height)
        if not scratch.setColorSpace(*target):
            raise RuntimeError(f"Krita could not convert {'/'.join(source)} to {'/'.join(target)}")
        scratch.waitForDone()
        return bytes(scratch.topLevelNodes()[0].pixelData(0, 0, width, height))
    finally:
        close_when_settled(scratch)


#: How long a scratch document is kept after its last use before it is closed.
SCRATCH_CLOSE_DELAY_MS = 1000


def close_when_settled(scratch: Document) -> None:
    """Close a scratch document once Krita has long finished with it, from the event loop.

    Not at once: Krita 5.2 delivers some of an image's notifications to its UI objects only
    after the event handler running the plugin has returned, and a document closed while its
    image still has work or notifications in flight destroys their receivers first, which
    Krita logs as "the destination object of KisSynchronizedConnection has been destroyed
    during postponed delivery".
    """

    def close() -> None:
        if scratch.tryBarrierLock():
            scratch.unlock()
            scratch.close()
        else:  # its image is still busy: look again a little later
            QTimer.singleShot(100, close)

    QTimer.singleShot(SCRATCH_CLOSE_DELAY_MS, close)


def read_rgba8(node: Node, rect: Rect) -> bytes:
    """The layer's pixels inside `rect` (image coordinates), as 8-bit sRGB RGBA."""
    raw = bytes(node.pixelData(rect.x, rect.y, rect.width, rect.height))
    space = node_space(node)
    if is_srgb16(space):
        raw = narrow16(raw)
    elif not is_daemon_space(space):
        raw = convert(raw, rect.width, rect.height, space, _DAEMON_SPACE)
    return swap_red_blue(raw)


def add_fill_layer(
    document: Document, above: Node, rect: Rect, rgba: bytes, alpha: bytes, name: str
) -> Node:
    """A new paint layer directly above `above`, holding `rgba` inside `rect` with `alpha` (the
    selection) as its opacity and nothing elsewhere; adding it is one undo step."""
    pixels = fill_layer_pixels(rgba, alpha, order="bgra")
    space = document_space(document)
    if is_srgb16(space):
        pixels = widen8(pixels)
    elif not is_daemon_space(space):
        pixels = convert(pixels, rect.width, rect.height, _DAEMON_SPACE, space)
    layer = document.createNode(name, "paintlayer")
    # Written before the layer joins the document, so the undo stack sees one "add layer".
    layer.setPixelData(pixels, rect.x, rect.y, rect.width, rect.height)
    parent = above.parentNode()
    if parent is None:  # the source layer was deleted while the daemon worked: add on top
        parent = document.rootNode()
        children = parent.childNodes()
        above = children[-1] if children else None
    if not parent.addChildNode(layer, above):
        raise RuntimeError("Krita did not accept the new layer")
    return layer
