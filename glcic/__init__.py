"""glcic: content-aware fill with the image completion network of Iizuka et al. (2017).

The engine is a plain library: networks, model files and the completion pipeline. The daemon
(`glcic.daemon`) and training (`glcic.training`) are built on it.
"""

from glcic.adaptation import AdaptSettings, adapt
from glcic.errors import (
    CancelledError,
    GlcicError,
    InputError,
    ModelFileError,
    Torch7ImportError,
)
from glcic.model_file import (
    CompletionModel,
    ModelMetadata,
    Provenance,
    load_model,
    new_model,
    read_model_metadata,
    save_model,
)
from glcic.model_names import resolve_model
from glcic.networks import (
    CompletionNetwork,
    ContextDiscriminator,
    GlobalDiscriminator,
    LocalDiscriminator,
    prepare_input,
)
from glcic.pipeline import CompletionStats, complete

__version__ = "0.1.0"

__all__ = [
    "AdaptSettings",
    "CancelledError",
    "CompletionModel",
    "CompletionNetwork",
    "CompletionStats",
    "ContextDiscriminator",
    "GlcicError",
    "GlobalDiscriminator",
    "InputError",
    "LocalDiscriminator",
    "ModelFileError",
    "ModelMetadata",
    "Provenance",
    "Torch7ImportError",
    "__version__",
    "adapt",
    "complete",
    "load_model",
    "new_model",
    "prepare_input",
    "read_model_metadata",
    "resolve_model",
    "save_model",
]
