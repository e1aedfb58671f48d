"""Errors segflow raises for bad input.

Every message names the file (and row, record or key) and says how to fix it, so
pipeline stages can print it as is instead of a traceback from deep in a library.
Each error also carries a short `reason` ("unknown shape", "missing image", ...): the
key under which the dataset report counts the record when ``fetch.bad_records: skip``
drops it instead of stopping (see `segflow.data.drops`).
"""

from __future__ import annotations

__all__ = ["SegflowError", "ConfigError", "AnnotationError", "ImageError", "SourceError", "Interrupted"]


class SegflowError(Exception):
    """Base class: a problem with the user's input, explained in the message."""

    def __init__(self, message: str = "", reason: str = "bad record") -> None:
        super().__init__(message)
        self.reason = reason


class ConfigError(SegflowError):
    """params.yaml is missing a key, has an unknown one, or a bad value."""


class AnnotationError(SegflowError):
    """An annotation file or one of its records cannot be used."""


class ImageError(SegflowError):
    """An image named by the annotations is missing or cannot be decoded."""


class SourceError(SegflowError):
    """The data source (folder, archive, URL, Cityscapes download) cannot be materialised."""


class Interrupted(SegflowError):
    """The user stopped a stage (Ctrl-C); the message says what was kept and how to go on."""
