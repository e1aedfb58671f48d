"""Read LabelMe JSON files (one per image) into canonical records.

`read_labelme` takes one ``.json`` file or a folder, whose ``*.json`` files (in
sub-folders too, in sorted order) are each one image. Shapes:

===========  ===================================  ==========================
shape_type   points                               record
===========  ===================================  ==========================
polygon      the vertices (also when missing)     polygon
rectangle    two opposite corners                 rect
circle       the centre, then a point on the rim  circle
line         two points                           polyline
linestrip    two or more points                   polyline
point        one point                            point
mask         the bitmap's top-left and            mask (a base64 PNG in
             bottom-right pixels                  ``mask``, placed as LabelMe does)
===========  ===================================  ==========================

``imagePath`` is relative to the JSON file. When that file is absent but the JSON
embeds the image (``imageData``), the record carries the bytes and fetch writes them.
"""

from __future__ import annotations

import base64
import binascii
import math
import posixpath
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from segflow.data.drops import Drops
from segflow.data.readers.base import Reader, ReadOptions, Source
from segflow.data.readers.common import declared_side, guard_pixels, load_json, points_from_pairs
from segflow.data.records import ImageAnnotation, Region
from segflow.errors import AnnotationError

__all__ = ["LABELME_SHAPES", "READER", "read_labelme", "parse_labelme"]

#: LabelMe shape types this reader understands.
LABELME_SHAPES = ("polygon", "rectangle", "circle", "line", "linestrip", "point", "mask")
# How many points each shape type needs: (fewest, most).
_POINTS = {
    "polygon": (3, None),
    "rectangle": (2, 2),
    "circle": (2, 2),
    "line": (2, 2),
    "linestrip": (2, None),
    "point": (1, 1),
    "mask": (2, 2),
}
_FIX = "fix the shape in LabelMe or delete it"


def _bitmap(
    shape: dict[str, Any], points: list[tuple[float, float]], height: int, width: int, where: str
) -> dict[str, Any]:
    """A LabelMe mask shape as a full-image compressed RLE."""
    try:
        data = np.frombuffer(base64.b64decode(shape.get("mask") or "", validate=True), np.uint8)
    except (binascii.Error, ValueError) as exc:
        raise AnnotationError(f"{where}: 'mask' is not base64 ({exc}); {_FIX}", reason="bad geometry") from exc
    if data.size:
        guard_pixels(data.tobytes(), f"{where}: 'mask'")
    bitmap = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if bitmap is None:
        raise AnnotationError(f"{where}: 'mask' is not a PNG bitmap; {_FIX}", reason="bad geometry")
    # As LabelMe's own shapes_to_label: corners truncated to ints, both inclusive.
    (x1, y1), (x2, y2) = [(int(x), int(y)) for x, y in points]
    if bitmap.shape != (y2 - y1 + 1, x2 - x1 + 1) or height <= 0 or width <= 0:
        raise AnnotationError(
            f"{where}: the mask bitmap is {bitmap.shape[1]}x{bitmap.shape[0]} but its corners "
            f"span {x2 - x1 + 1}x{y2 - y1 + 1} (image {width}x{height}); {_FIX}",
            reason="bad geometry",
        )
    full = np.zeros((height, width), np.uint8, order="F")
    top, left = max(y1, 0), max(x1, 0)
    part = bitmap[top - y1 : height - y1, left - x1 : width - x1] > 0
    full[top : top + part.shape[0], left : left + part.shape[1]] = part
    rle = coco_mask.encode(full)
    return {"counts": rle["counts"].decode("ascii"), "size": [height, width]}


def _region(shape: Any, number: int, path: Path, name: str, height: int, width: int) -> Region:
    """One LabelMe shape as a `Region`; `name` is the file's name below the root, for origins."""
    where, origin = f"{path} shape {number}", f"{name} shape {number}"
    if not isinstance(shape, dict):
        raise AnnotationError(f"{where}: not a JSON object; {_FIX}", reason="bad geometry")
    kind = shape.get("shape_type") or "polygon"  # LabelMe before 3.0 wrote no shape_type
    if kind not in LABELME_SHAPES:
        raise AnnotationError(
            f"{where}: unknown shape_type {kind!r}; known shape types are {list(LABELME_SHAPES)}; "
            "redraw it as one of them",
            reason="unknown shape",
        )
    label = shape.get("label")
    if label is not None and not isinstance(label, str):
        raise AnnotationError(f"{where}: label is {label!r}, not a label; {_FIX}", reason="no label")
    label = (label or "").strip()  # empty: no label; fetch gives it fetch.default_label
    points = points_from_pairs(shape.get("points"), "points", where, _FIX)
    if kind == "polygon" and len(points) > 3 and points[-1] == points[0]:
        points.pop()  # records close polygons implicitly
    fewest, most = _POINTS[kind]
    if len(points) < fewest or (most is not None and len(points) > most):
        needed = f"{fewest}" if fewest == most else f"at least {fewest}"
        raise AnnotationError(
            f"{where}: {kind} has {len(points)} points, needs {needed}; {_FIX}", reason="bad geometry"
        )
    if kind == "rectangle":
        (xa, ya), (xb, yb) = points
        geometry = {"x": min(xa, xb), "y": min(ya, yb), "width": abs(xb - xa), "height": abs(yb - ya)}
        return Region(label=label, shape="rect", geometry=geometry, origin=origin)
    if kind == "circle":
        (cx, cy), (px, py) = points
        geometry = {"cx": cx, "cy": cy, "r": math.hypot(px - cx, py - cy)}
        return Region(label=label, shape="circle", geometry=geometry, origin=origin)
    if kind == "mask":
        geometry = _bitmap(shape, points, height, width, where)
        return Region(label=label, shape="mask", geometry=geometry, origin=origin)
    record_shape = {"line": "polyline", "linestrip": "polyline"}.get(kind, kind)
    return Region(label=label, shape=record_shape, points=tuple(points), origin=origin)


def parse_labelme(path: Path, data: Any, drops: Drops | None = None, prefix: str = "") -> ImageAnnotation:
    """One LabelMe file, already parsed from `path`; `prefix` is its folder below the root."""
    drops = drops or Drops()
    if not isinstance(data, dict) or "shapes" not in data or not isinstance(data.get("imagePath"), str):
        raise AnnotationError(
            f"{path}: no 'shapes' and 'imagePath', so not a LabelMe file; remove it from the "
            "folder or set fetch.format",
            reason="unreadable file",
        )
    if not isinstance(data["shapes"], list):
        raise AnnotationError(
            f"{path}: 'shapes' is not a list; save the file again in LabelMe", reason="unreadable file"
        )
    # Only mask shapes need the size; a missing or odd one fails those with a clear message.
    height, width = declared_side(data.get("imageHeight")), declared_side(data.get("imageWidth"))
    name = posixpath.join(prefix, path.name)
    regions = []
    for number, shape in enumerate(data["shapes"]):
        try:
            regions.append(_region(shape, number, path, name, height, width))
        except AnnotationError as exc:
            drops.bad(exc)
    image_path = data["imagePath"].replace("\\", "/")  # LabelMe on Windows writes backslashes
    filename = posixpath.normpath(posixpath.join(prefix, image_path))
    embedded = data.get("imageData") or ""
    image_data = embedded if embedded and not (path.parent / image_path).is_file() else ""
    return ImageAnnotation(filename=filename, regions=tuple(regions), origin=name, image_data=image_data)


def read_labelme(path: Path, label_key: str = "", drops: Drops | None = None) -> list[ImageAnnotation]:
    """Read one LabelMe file, or every ``*.json`` in a folder; `label_key` is unused.

    Image file names are relative to `path`'s folder (a file) or to `path` (a folder).
    """
    drops = drops or Drops()
    if not path.is_dir():
        return [parse_labelme(path, load_json(path, "LabelMe"), drops)]
    files = sorted(path.rglob("*.json"))
    if not files:
        raise AnnotationError(f"{path}: no LabelMe *.json files in this folder; check fetch.annotations")
    records = []
    for file in files:
        prefix = file.parent.relative_to(path).as_posix()
        prefix = "" if prefix == "." else prefix  # a file at the top of the folder
        try:
            records.append(parse_labelme(file, load_json(file, "LabelMe"), drops, prefix))
        except AnnotationError as exc:
            drops.bad(exc)
    return records


def _is_labelme(source: Source) -> bool:
    """A folder holding any ``.json`` (tried after Cityscapes' and the mask layouts), or a
    JSON object with ``shapes`` and ``imagePath``."""
    if source.is_dir:
        return next(source.path.rglob("*.json"), None) is not None
    data = source.sniff_json()
    return isinstance(data, dict) and {"shapes", "imagePath"} <= data.keys()


def _read(source: Source, options: ReadOptions) -> list[ImageAnnotation]:
    if source.is_dir:
        return read_labelme(source.path, options.label_key, options.drops)
    return [parse_labelme(source.path, source.json(), options.drops)]


READER = Reader(name="labelme", detect=_is_labelme, read=_read, folders=True, pil_fill=True)
