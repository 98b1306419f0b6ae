"""The user's choices for Content-aware complete, remembered per user in Krita's own settings
(kritarc, group "glcic"), so they survive a restart and follow Krita's profile, not a file of
ours. Only the model for now; options added later ("adapt to this image") go here too.
"""

from __future__ import annotations

from krita import Krita

GROUP = "glcic"
MODEL_KEY = "model"


def chosen_model() -> str | None:
    """The model the user chose, or None for the daemon's default."""
    name = Krita.instance().readSetting(GROUP, MODEL_KEY, "").strip()
    return name or None


def choose_model(name: str | None) -> None:
    """Remember `name` (None: the daemon's default) for every later completion."""
    Krita.instance().writeSetting(GROUP, MODEL_KEY, name or "")
