"""Checks of the Krita plugin's colour handling in headless Krita (kritarunner, no window).

Run by tests/test_krita_plugin.py as `kritarunner -s kritarunner_checks -f main` with the
installed plugin on PYTHONPATH; writes what it saw to $GLCIC_TEST_RESULTS. It covers what the
windowed driver does not: a CMYK document, where the daemon's 8-bit sRGB pixels must come from
and go back through Krita's colour engine.
"""

import json
import os
import time
import traceback

from krita import Krita
from PyQt5.QtWidgets import QApplication

WIDTH, HEIGHT = 64, 48


def cmyk_round_trip() -> dict:
    from glcic_complete import document_io
    from glcic_complete.glcic_plugin_common import Rect

    doc = Krita.instance().createDocument(WIDTH, HEIGHT, "cmyk", "CMYKA", "U8", "", 72.0)
    root = doc.rootNode()
    paint = doc.createNode("paint", "paintlayer")
    root.addChildNode(paint, root.childNodes()[0])
    # Left half paper white (no ink), right half full cyan; all opaque.
    row = bytes((0, 0, 0, 0, 255)) * (WIDTH // 2) + bytes((255, 0, 0, 0, 255)) * (WIDTH // 2)
    paint.setPixelData(row * HEIGHT, 0, 0, WIDTH, HEIGHT)
    doc.waitForDone()
    before = bytes(paint.pixelData(0, 0, WIDTH, HEIGHT))
    region = Rect(0, 0, WIDTH, HEIGHT)
    rgba = document_io.read_rgba8(paint, region)
    white = list(rgba[(HEIGHT // 2 * WIDTH + 2) * 4 :][:4])
    cyan = list(rgba[(HEIGHT // 2 * WIDTH + WIDTH - 3) * 4 :][:4])
    alpha = bytes([0, 128, 255, 255] * (WIDTH * HEIGHT // 4))
    layer = document_io.add_fill_layer(doc, paint, region, rgba, alpha, "Content-aware fill")
    doc.waitForDone()
    out = bytes(layer.pixelData(0, 0, WIDTH, HEIGHT))
    result = {
        "rgba_length": len(rgba),
        "white": white,
        "cyan": cyan,
        "layers": [n.name() for n in root.childNodes()],
        "fill_space": [layer.colorModel(), layer.colorDepth()],
        "fill_alpha": list(out[4::5][:8]),
        "fill_white_ink": list(out[(HEIGHT // 2 * WIDTH + 2) * 5 :][:4]),
        "fill_cyan_ink": list(out[(HEIGHT // 2 * WIDTH + WIDTH - 2) * 5 :][:4]),
        "original_unchanged": before == bytes(paint.pixelData(0, 0, WIDTH, HEIGHT)),
    }
    # The plugin closes its scratch documents a moment later, from the event loop (see
    # document_io.close_when_settled).
    deadline = time.monotonic() + 20
    while len(Krita.instance().documents()) > 1 and time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.02)
    result["open_documents"] = len(Krita.instance().documents())
    doc.close()
    return result


def main(args) -> None:
    try:
        results = {"cmyk": cmyk_round_trip()}
    except Exception:
        results = {"error": traceback.format_exc()}
    path = os.environ["GLCIC_TEST_RESULTS"]
    with open(path + ".tmp", "w", encoding="utf-8") as stream:
        json.dump(results, stream)
    os.replace(path + ".tmp", path)
