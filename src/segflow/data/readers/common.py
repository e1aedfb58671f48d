"""What every annotation reader needs: file text, JSON with clear errors, checked numbers.

Each function takes the name of the tool that wrote the file, so its message can say
where to export the file again.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path
from typing import Any

from segflow.errors import AnnotationError, ImageError
from segflow.pixel_limit import DEFAULT_MAX_PIXELS, check_pixels

__all__ = ["read_text", "load_json", "guard_pixels", "number", "points_from_pairs", "declared_side"]

_NUMBERS = (int, float)
_PAIRS = (list, tuple)


def read_text(path: Path, tool: str) -> str:
    """The file's text, undecoded newlines kept (quoted CSV cells may hold them)."""
    try:
        return path.read_bytes().decode("utf-8-sig")  # tools on Windows may write a BOM
    except OSError as exc:
        raise AnnotationError(
            f"{path}: cannot read the file ({exc}); check the path", reason="unreadable file"
        ) from exc
    except UnicodeDecodeError as exc:
        raise AnnotationError(
            f"{path}: not UTF-8 text ({exc}); export it again from {tool}",
            reason="unreadable file",
        ) from exc


def load_json(path: Path, tool: str) -> Any:
    """Parse a JSON file; a truncated or broken file names its line and column.

    Nesting deeper than Python's recursion limit (about 1,000 levels; an annotation file
    nests under 10) is refused with an error, not a `RecursionError` traceback: a file of
    100,000 ``[`` is hostile or broken, never an export.
    """
    try:
        return json.loads(read_text(path, tool))
    except RecursionError:
        raise AnnotationError(
            f"{path}: JSON nested deeper than {sys.getrecursionlimit():,} levels (an annotation "
            f"file nests under 10); the file is corrupt or hostile: export the annotations again from {tool}",
            reason="unreadable file",
        ) from None
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); "
            f"the file may be truncated: export the annotations again from {tool}",
            reason="unreadable file",
        ) from exc


def guard_pixels(source: Path | bytes, name: str) -> None:
    """Refuse a mask image or bitmap of more than ``fetch.max_pixels``' default from its
    header, before Pillow or OpenCV decodes it (see `segflow.pixel_limit`).

    Raises:
        AnnotationError: naming `name`, the size and the key (a bad record).
    """
    try:
        check_pixels(source, DEFAULT_MAX_PIXELS, "fetch.max_pixels", name)
    except ImageError as exc:
        raise AnnotationError(str(exc), reason=exc.reason) from None


def number(value: Any, key: str, where: str, fix: str) -> float:
    """Return `value` as a float, or raise naming `key`, the record and the fix."""
    # bool is an int subclass, but `true` is no coordinate; NaN and inf paint nothing.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnnotationError(f"{where}: {key} is {value!r}, not a number; {fix}", reason="bad geometry")
    return float(value)


def points_from_pairs(pairs: Any, key: str, where: str, fix: str) -> list[tuple[float, float]]:
    """[(x, y), ...] from a list of [x, y] pairs (LabelMe, Cityscapes)."""
    if not isinstance(pairs, list):
        raise AnnotationError(
            f"{where}: {key} is {type(pairs).__name__}, not a list of [x, y]; {fix}",
            reason="bad geometry",
        )
    # Fast path for well-formed input (Cityscapes frames hold thousands of vertices);
    # bools are excluded by the exact type test, as `number` excludes them.
    fast = [
        (float(p[0]), float(p[1]))
        for p in pairs
        if type(p) in _PAIRS and len(p) == 2 and type(p[0]) in _NUMBERS and type(p[1]) in _NUMBERS
    ]
    if len(fast) == len(pairs) and all(map(math.isfinite, itertools.chain.from_iterable(fast))):
        return fast
    points = []  # the slow path finds the bad value and names it
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise AnnotationError(f"{where}: {key}[{i}] is {pair!r}, not an [x, y] pair; {fix}", reason="bad geometry")
        points.append((number(pair[0], f"{key}[{i}][0]", where, fix), number(pair[1], f"{key}[{i}][1]", where, fix)))
    return points


def declared_side(value: Any) -> int:
    """An image side as an export declares it (COCO's width, LabelMe's imageHeight): a finite
    number, else 0, which fails only the shapes that need the size, with their own message."""
    if type(value) in (int, float) and math.isfinite(value) and 0 <= value <= 1e9:
        return int(value)
    return 0
