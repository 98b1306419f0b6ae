"""glcic's "Content-aware complete" for Krita: fills the selection through the local daemon.

The thin client (glcic_client.py) and, on builds with their own Python, pyzmq and msgpack
(vendor/) are put beside this file by `glcic-daemon install-plugin krita`.
"""

import sys
from pathlib import Path

_VENDOR = Path(__file__).resolve().parent / "vendor"
if _VENDOR.is_dir() and str(_VENDOR) not in sys.path:
    sys.path.insert(0, str(_VENDOR))

from krita import Krita  # noqa: E402

from .extension import ContentAwareCompleteExtension  # noqa: E402

#: The registered extension; scripts reach the action's object as EXTENSION.completion.
EXTENSION = ContentAwareCompleteExtension(Krita.instance())
Krita.instance().addExtension(EXTENSION)
