"""The library's user-facing errors: one base class, so a caller (the CLI, a pipeline, a
server) can tell "this input or setting cannot be used, and here is why" from a bug.

Each subclass also derives from the built-in exception it replaces (``ValueError``,
``FileNotFoundError``, ``RuntimeError``), so code that caught those keeps working.
"""

from __future__ import annotations


class SpeechRNNError(Exception):
    """Something the user can fix: ``str(err)`` names the file or setting and the reason."""


class InputError(SpeechRNNError, ValueError):
    """An argument, option or file content that cannot be used."""


class NotFoundError(SpeechRNNError, FileNotFoundError):
    """A file, folder, corpus or model that is not where it was said to be."""


class MissingDependencyError(SpeechRNNError, RuntimeError):
    """An optional package or program that this path needs is not installed."""


def reason(err: Exception) -> str:
    """Why ``err`` happened, without the file name that an
    :class:`~speechrnn.audio.AudioError` starts with: for a caller that names the item."""
    return getattr(err, "reason", None) or str(err)
