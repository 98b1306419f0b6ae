"""The daemon's models: files in the model directory plus the built-in default, hot-reloaded.

Which files those are, and what `default` means, is `glcic.model_names`' rule, the one every
command follows; the daemon's own addition is `start --model NAME`, which makes NAME the model
used when a request names none.

A file added or replaced in the directory is noticed by its (mtime, size, inode) and loaded at
once; if it fails to load, the error is logged and shown in `status`, and the version that was
loaded before stays in service. Loaded networks are kept on the daemon's device.

Loading a big file takes seconds, so it never happens under the lock the main thread takes to
list models (`status`, `models`, checking a request): only the worker and the loader thread load,
one scan at a time, and what a load produces is put in place under the lock in one step.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from glcic.default_model import DEFAULT_MODEL_NAME
from glcic.errors import GlcicError
from glcic.model_file import MODEL_SUFFIX, CompletionModel, load_model
from glcic.model_names import available_models, describe_available

log = logging.getLogger("glcic.daemon")

BUILTIN_NAME = DEFAULT_MODEL_NAME


class ModelNotFound(GlcicError):
    pass


@dataclass
class ModelEntry:
    name: str
    path: Path
    builtin: bool
    signature: tuple[int, int, int] = (0, 0, 0)
    model: CompletionModel | None = None
    error: str | None = None

    def describe(self) -> dict[str, Any]:
        meta = self.model.metadata if self.model is not None else None
        return {
            "name": self.name,
            "path": str(self.path),
            "builtin": self.builtin,
            "size_bytes": self.signature[1],
            "loaded": self.model is not None,
            "error": self.error,
            "metadata": meta.to_json() if meta is not None else None,
        }


def _signature(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


class ModelManager:
    """Thread-safe: the worker and the loader thread load and use models, the main thread lists
    them without waiting for a load."""

    def __init__(
        self,
        directory: Path,
        device: torch.device,
        configured_default: str | None,
        precision: str = "float32",
    ):
        self.directory = directory
        self.device = device
        self.precision = precision  # as asked (auto, float32, bfloat16): resolved per load
        self.configured_default = configured_default
        self.entries: dict[str, ModelEntry] = {}
        #: Guards `entries`; held only for moments, never while a file loads.
        self.lock = threading.RLock()
        #: One scan (and its loading) at a time: a second caller waits, then finds it done.
        self.scan_lock = threading.Lock()

    def scan(self) -> None:
        """Notice added, replaced and removed files, and load what changed.

        Blocks while a file loads: call it from the worker or the loader thread, never from the
        daemon's main thread (which only reads `entries`, under `lock`)."""
        with self.scan_lock:
            for entry in self._changed():
                self._load(entry)

    def _changed(self) -> list[ModelEntry]:
        """Bring `entries` up to date with the folder; the entries whose files need loading."""
        # A file named default replaces the built-in; dot files (atomic writes) are skipped.
        found = {m.name: (m.path, m.builtin) for m in available_models(self.directory)}
        changed = []
        with self.lock:
            for name in list(self.entries):
                if name not in found:
                    log.info("model %s removed", name)
                    del self.entries[name]
            for name, (path, builtin) in found.items():
                entry = self.entries.get(name)
                if entry is None or entry.path != path:
                    # Another file under the same name: the loaded network serves until the new
                    # file has loaded (or for good, if it fails), as for a replaced file.
                    previous = entry.model if entry is not None else None
                    entry = self.entries[name] = ModelEntry(name, path, builtin, model=previous)
                try:
                    signature = _signature(path)
                except OSError as error:  # vanished, a symlink loop, no permission, I/O error
                    entry.error = f"{path}: cannot be read ({error.strerror or error})"
                    continue
                if signature != entry.signature:
                    entry.signature = signature
                    changed.append(entry)
        return changed

    def _load(self, entry: ModelEntry) -> None:
        """Load `entry`'s file outside `lock`, then put the result in place under it."""
        try:
            model = load_model(entry.path, device=self.device, precision=self.precision)
        except Exception as error:  # whatever is wrong with one file must not stop the daemon
            with self.lock:
                entry.error = str(error)
                kept = "; the previous version stays in service" if entry.model else ""
            log.error("model %s failed to load: %s%s", entry.name, error, kept)
            return
        with self.lock:
            entry.model, entry.error = model, None
        log.info("model %s loaded from %s", entry.name, entry.path)

    def default_name(self) -> str | None:
        with self.lock:
            usable = [name for name, e in self.entries.items() if e.model is not None]
            if self.configured_default in usable:
                return self.configured_default
            if BUILTIN_NAME in usable:
                return BUILTIN_NAME
            return None

    def check_configured_default(self) -> None:
        """Raise `ModelNotFound` unless the `start --model` model (if any) is there and loaded.

        Called once the first scan has loaded the folder, so a daemon never starts serving a
        default other than the one the user asked for."""
        name = self.configured_default
        if name is None:
            return
        with self.lock:
            entry = self.entries.get(name)
            if entry is None:
                raise ModelNotFound(
                    f"--model {name}: no such model; {describe_available(self.directory)}"
                )
            if entry.model is None:
                raise ModelNotFound(f"--model {name}: cannot be loaded: {entry.error}")

    def exists(self, name: str) -> bool:
        """Known, or its file just appeared (the worker loads it when the request runs)."""
        with self.lock:
            if name in self.entries:
                return True
        safe = 0 < len(name) <= 200 and not any(c in name for c in "/\\\0")
        try:
            return (
                safe
                and not name.startswith(".")
                and (self.directory / f"{name}{MODEL_SUFFIX}").is_file()
            )
        except OSError:
            return False

    def get(self, name: str | None) -> tuple[str, CompletionModel]:
        """The named (or default) model, loaded; raises ModelNotFound."""
        self.scan()
        with self.lock:
            chosen = name or self.default_name()
            if chosen is None:
                raise ModelNotFound(
                    "no model is available: put a .safetensors model in "
                    f"{self.directory} (e.g. from 'glcic-train export' or 'glcic import-t7')"
                )
            entry = self.entries.get(chosen)
            if entry is None:
                raise ModelNotFound(f"no model named {chosen!r}")
            if entry.model is None:
                raise ModelNotFound(f"model {chosen!r} cannot be loaded: {entry.error}")
            return chosen, entry.model

    def describe(self) -> list[dict[str, Any]]:
        with self.lock:
            default = self.default_name()
            return [dict(e.describe(), default=(n == default)) for n, e in self.entries.items()]

    def errors(self) -> dict[str, str]:
        with self.lock:
            return {n: e.error for n, e in self.entries.items() if e.error}
