"""Which model a GIMP run completes with: the rows the dialog offers and the check that a
script's model name gets, both from the daemon's own list (glcic_plugin_common.daemon_models).

The procedure's "model" argument is a plain string rather than one of GIMP 3's choice
arguments, because GIMP fixes a choice argument's values when it registers the plug-in (at
start-up, when the daemon may not even run) and would refuse any model added to the daemon's
folder afterwards. So the check happens here, at run time, against what the daemon has now.

No GIMP imports: these are plain rules, tested without GIMP (tests/test_gimp_plugin.py).
"""

from __future__ import annotations

from dataclasses import dataclass

#: The "model" argument's value meaning "whatever model the daemon uses by default".
DAEMON_DEFAULT = ""


@dataclass(frozen=True)
class ModelChoices:
    """What the dialog's model list shows."""

    #: (value of the "model" argument, label shown), in the order shown.
    rows: list[tuple[str, str]]
    #: The row selected when the dialog opens.
    active: str
    #: Why the model remembered from the last run is not the one selected, if so.
    note: str | None


def model_choices(names: list[str], default: str | None, remembered: str) -> ModelChoices:
    """The dialog's rows for the daemon's models `names` (its default `default`, None when it
    has none), with `remembered` (the last run's value, which libgimp restores) selected when
    the daemon still has it.

    The first row follows the daemon's default rather than naming it, so that a user who
    never chose keeps getting whatever default the daemon is started with."""
    rows: list[tuple[str, str]] = []
    if default is not None:
        rows.append((DAEMON_DEFAULT, f"The daemon's default ({default})"))
    rows.extend((name, name) for name in names)
    values = [value for value, _ in rows]
    if remembered in values:
        return ModelChoices(rows, remembered, None)
    active = values[0] if values else DAEMON_DEFAULT
    note = None
    if remembered != DAEMON_DEFAULT:
        instead = "the daemon's default" if active == DAEMON_DEFAULT else f'"{active}"'
        note = (
            f'The model used last time, "{remembered}", is no longer among the glcic '
            f"daemon's models; {instead} is selected instead."
        )
    return ModelChoices(rows, active, note)


def describe_models(names: list[str], default: str | None) -> str:
    """The daemon's models as a sentence fragment: "default, mine (the daemon's default)"."""
    return ", ".join(
        f"{name} (the daemon's default)" if name == default else name for name in names
    )


def model_problem(requested: str, names: list[str], default: str | None) -> str | None:
    """Why the daemon cannot complete with `requested` ("" for its default), in words that
    name what it does have; None when it can."""
    if not names:
        return (
            "The glcic daemon has no completion model to use. `glcic-daemon models` in a "
            "terminal shows its model folder and what is wrong with the files in it."
        )
    if requested == DAEMON_DEFAULT:
        if default is not None:
            return None
        return (
            "The glcic daemon has no default model. Choose one of its models by name: "
            f"{describe_models(names, default)}."
        )
    if requested in names:
        return None
    return (
        f'The glcic daemon has no model named "{requested}". Its models are: '
        f"{describe_models(names, default)}. Give one of these names as the procedure's "
        '"model" argument, or an empty name for the daemon\'s default model.'
    )
