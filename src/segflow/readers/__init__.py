"""Annotation readers: one function per tool export, each returning `ImageAnnotation` records.

To add a format, write ``read_<format>(path, label_key)`` in its own module, add it to
`_READERS`, and, if its extension is unambiguous, to `_EXTENSIONS` for ``"auto"``.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from segflow.errors import AnnotationError
from segflow.readers.via import read_via_csv, read_via_json
from segflow.records import ImageAnnotation

__all__ = ["FORMATS", "read_annotation_file"]

Reader = Callable[[Path, str], list[ImageAnnotation]]

_READERS: dict[str, Reader] = {
    "via_csv": read_via_csv,
    "via_json": read_via_json,
}
# What "auto" picks for each (lower-case) file extension.
_EXTENSIONS = {".csv": "via_csv", ".json": "via_json"}

#: Accepted values of the format argument: "auto" (pick by extension) or a reader name.
FORMATS = ("auto", *_READERS)


def read_annotation_file(path: Path, fmt: str, label_key: str) -> list[ImageAnnotation]:
    """Read one annotation export with the reader for `fmt`.

    Args:
        path: the annotation file.
        fmt: one of `FORMATS`; ``"auto"`` picks by extension (.csv: via_csv, .json: via_json).
        label_key: the region attribute holding the label, e.g. ``"labels"``.
    """
    if fmt not in FORMATS:
        raise AnnotationError(f"unknown annotation format {fmt!r}; choose from {list(FORMATS)}")
    if fmt == "auto":
        suffix = path.suffix.lower()
        if suffix not in _EXTENSIONS:
            raise AnnotationError(
                f"{path}: cannot tell the annotation format from the extension {suffix!r} "
                f"(known: {sorted(_EXTENSIONS)}); set the format to one of {list(_READERS)}"
            )
        fmt = _EXTENSIONS[suffix]
    return _READERS[fmt](path, label_key)
