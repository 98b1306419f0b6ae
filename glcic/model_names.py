"""How every command turns what the user typed after `--model` into a model file.

One rule for the CLI, the evaluator, the trainer's `--init` and the daemon, so a name that works
in Krita works on the command line too:

1. ``default`` always means the default model, chosen as the daemon chooses it when no model
   is configured: the user's ``<models>/default.safetensors`` if there is one, otherwise the
   model shipped inside the package (`glcic.default_model`). (A file that happens to be called
   ``default`` in the current folder is ``./default``.)
2. A path to an existing file is that file: a path wins over a name, because it is explicit.
3. Otherwise a name is looked up in the model directory (`glcic.paths.models_dir()`), with or
   without the ``.safetensors`` suffix: ``mine`` and ``mine.safetensors`` both find
   ``<models>/mine.safetensors``.

The daemon serves the folder's models by name; `daemon_model_name` turns what a user typed into
the name the daemon knows, by the same rule.

Anything else is a user error whose message says where we looked and lists the models there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from glcic import default_model
from glcic.default_model import DEFAULT_MODEL_NAME
from glcic.errors import ModelFileError
from glcic.paths import MODEL_SUFFIX, models_dir

#: Longest name looked up in the model directory; longer specs can only be paths.
_MAX_NAME = 200


@dataclass(frozen=True)
class AvailableModel:
    """A model a user can name: its name, its file, and whether it is the packaged one."""

    name: str
    path: Path
    builtin: bool


def _is_model_file(path: Path) -> bool:
    # Dot files are the temporary files of atomic writes (glcic.atomic), never models.
    return path.suffix == MODEL_SUFFIX and not path.name.startswith(".")


def available_models(directory: Path | None = None) -> list[AvailableModel]:
    """The models that names resolve to, sorted by name; the daemon lists the same set.

    A user file named ``default.safetensors`` replaces the packaged model under that name.
    An unreadable or missing directory simply holds no models.
    """
    directory = models_dir() if directory is None else directory
    found: dict[str, AvailableModel] = {}
    packaged = default_model.PACKAGED_MODEL  # looked up at each call: tests replace it
    if packaged.is_file():
        found[DEFAULT_MODEL_NAME] = AvailableModel(DEFAULT_MODEL_NAME, packaged, True)
    try:
        paths = sorted(directory.glob(f"*{MODEL_SUFFIX}")) if directory.is_dir() else []
    except OSError:
        paths = []
    for path in paths:
        if _is_model_file(path):
            found[path.stem] = AvailableModel(path.stem, path, False)
    return [found[name] for name in sorted(found)]


def _as_name(spec: str) -> str | None:
    """The model name `spec` stands for, or None when it cannot be a name (it is a path)."""
    name = spec[: -len(MODEL_SUFFIX)] if spec.endswith(MODEL_SUFFIX) else spec
    if not 0 < len(name) <= _MAX_NAME or name.startswith("."):
        return None
    if any(c in name for c in "/\\\0") or (os.altsep and os.altsep in name):
        return None
    return name


def describe_available(directory: Path | None = None) -> str:
    """One line for error messages: where the models live and what is there."""
    directory = models_dir() if directory is None else directory
    models = available_models(directory)
    if not models:
        return f"no models are installed (model folder: {directory})"
    names = ", ".join(m.name + (" (built-in)" if m.builtin else "") for m in models)
    return f"available: {names} (model folder: {directory})"


def resolve_model(spec: str | os.PathLike[str]) -> Path:
    """The model file `spec` means (see the module docstring); raises `ModelFileError`.

    The file is only found here, not validated: loading it (`glcic.model_file.load_model`)
    checks what it holds and names any defect.
    """
    text = os.fspath(spec)
    if not text:
        raise ModelFileError(f"an empty model name; {describe_available()}")
    if text == DEFAULT_MODEL_NAME:
        return default_model.default_model_path()
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise ModelFileError(f"{text}: is a folder, not a model file; {describe_available()}")
    name = _as_name(text)
    if name is not None:
        for model in available_models():
            if model.name == name:
                return model.path
    what = "no such model file" if name is None else "no model file or model named"
    raise ModelFileError(f"{what} {text!r}; {describe_available()}")


def daemon_model_name(spec: str | os.PathLike[str]) -> str:
    """The name under which the daemon serves the model `spec` means; raises `ModelFileError`.

    A bare name is passed on as it is (without ``.safetensors``): the daemon may know a file
    that appeared after this call. A path must lead to a file in the model folder (or to the
    built-in model), because the daemon serves nothing else.
    """
    text = os.fspath(spec)
    name = _as_name(text)
    if name is not None and (text == DEFAULT_MODEL_NAME or not Path(text).expanduser().is_file()):
        return name
    path = resolve_model(text).resolve()
    for model in available_models():
        if model.path.resolve() == path:
            return model.name
    raise ModelFileError(
        f"{text}: the daemon serves only the models in its folder ({models_dir()}); copy the "
        "file there and name it by its file name without .safetensors"
    )
