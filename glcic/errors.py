"""Exceptions that carry a message meant for the user.

Command-line front ends catch `GlcicError` and print its message with exit code 2 (through
`glcic.cli_support.run_command`); anything else is a bug and is allowed to surface as a traceback.
"""


class GlcicError(Exception):
    """Base class for every error whose message is written for the user."""


class ModelFileError(GlcicError):
    """A model file is missing, damaged, foreign, or does not match its own metadata."""


class Torch7ImportError(GlcicError):
    """A Torch7 file cannot be read, or its network is not the one we can import."""


class InputError(GlcicError, ValueError):
    """An image, mask or option given to the pipeline cannot be used as it is."""


class CancelledError(GlcicError):
    """The caller asked a running job to stop (checked between crops)."""
