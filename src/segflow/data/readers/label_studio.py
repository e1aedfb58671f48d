"""Read a Label Studio JSON export (a list of tasks) into canonical records.

Each task is one image; its annotation's results become regions, in the file's order:

===================  ===========================================  ===========================
result ``type``      ``value`` (percent of the image, x right)    record
===================  ===========================================  ===========================
polygonlabels        ``points`` [[x, y], ...]; ``closed: false``  polygon (polyline if open)
rectanglelabels      ``x y width height`` (top-left), ``rotation``  rect, or a 4-corner polygon
                     (degrees clockwise about the top-left)       when rotated
ellipselabels        ``x y`` (centre) ``radiusX radiusY``,        ellipse
                     ``rotation``
brushlabels          ``rle``: Label Studio's brush RLE            mask (a full-image COCO RLE)
keypointlabels       ``x y``                                      point
===================  ===========================================  ===========================

The shape types without labels (``polygon``, ``rectangle``, ...) take their label from the
``labels`` result with the same id; results without pixels (choices, text) are skipped:
`read_label_studio_tags` lists the image-level tags (choices), which fetch reports.
Percent becomes pixels through each result's ``original_width`` and ``original_height``.

Annotation: a task's non-cancelled annotations; of several, the one marked ground truth,
else the newest (highest id). Predictions and drafts are not annotations. A task with no
annotation is not labelled yet: it is left out and counted ("not annotated").

Image names: ``data``'s image URL (the key ``image``, or the task's one string value):
``/data/upload/<project>/<8 hex>-<name>`` (Label Studio prefixes uploads with a hash),
``/data/local-files/?d=<path>``, or any URL; resolved below the export's folder (or
``fetch.images``) by file name, the hash prefix stripped when the exact name is absent.
"""

from __future__ import annotations

import math
import posixpath
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import numpy as np
from pycocotools import mask as coco_mask

from segflow.data.drops import Drops
from segflow.data.readers.base import Reader, ReadOptions, Source
from segflow.data.readers.common import load_json, number, points_from_pairs
from segflow.data.readers.image_files import ImageFiles
from segflow.data.readers.label_studio_rle import decode_brush_rle
from segflow.data.records import ImageAnnotation, Region
from segflow.errors import AnnotationError

__all__ = [
    "LABEL_STUDIO_TYPES",
    "READER",
    "is_label_studio_export",
    "read_label_studio",
    "read_label_studio_tags",
    "parse_label_studio",
]

#: Result types that carry pixels, each with its shape type without labels.
LABEL_STUDIO_TYPES = ("polygonlabels", "rectanglelabels", "ellipselabels", "brushlabels", "keypointlabels")
_UNLABELLED = {kind.removesuffix("labels"): kind for kind in LABEL_STUDIO_TYPES}
_FIX = "fix the region in Label Studio or delete it, and export again"
_UPLOAD_HASH = re.compile(r"^[0-9a-f]{8}-")


def is_label_studio_export(data: Any) -> bool:
    """Whether parsed JSON is a Label Studio JSON export: a list of tasks with ``data``."""
    return (
        isinstance(data, list)
        and bool(data)
        and all(isinstance(task, dict) and "data" in task and "annotations" in task for task in data)
    )


def _image_url(task: dict, where: str) -> str:
    data = task.get("data")
    values = [v for v in data.values() if isinstance(v, str)] if isinstance(data, dict) else []
    url = data.get("image") if isinstance(data, dict) and isinstance(data.get("image"), str) else None
    if url is None and len(values) == 1:
        url = values[0]
    if not url:
        raise AnnotationError(
            f"{where}: cannot tell which 'data' value is the image (no 'image' key and not one string "
            f"value: {sorted(data) if isinstance(data, dict) else data!r}); export again from an image project",
            reason="unreadable file",
        )
    return url


def _image_names(url: str) -> list[str]:
    """The file names `url` may mean, most exact first."""
    parsed = urlparse(url)
    if parsed.path.startswith("/data/local-files") and "d" in parse_qs(parsed.query):
        return [parse_qs(parsed.query)["d"][0]]
    name = posixpath.basename(unquote(parsed.path))
    stripped = _UPLOAD_HASH.sub("", name)
    return [name, stripped] if stripped != name else [name]


def _resolve(files: ImageFiles, url: str, where: str) -> str:
    names, where = _image_names(url), f"{where} (image {url!r})"
    for name in names[:-1]:
        try:
            return files.resolve(name, where, "")
        except AnnotationError as exc:
            if exc.reason != "missing image":
                raise
    return files.resolve(names[-1], where, "delete the task in Label Studio")


def _annotation(task: dict, where: str) -> dict | None:
    annotations = task.get("annotations")
    if not isinstance(annotations, list):
        raise AnnotationError(f"{where}: 'annotations' is not a list; export again", reason="unreadable file")
    usable = [a for a in annotations if isinstance(a, dict) and not a.get("was_cancelled")]
    if not usable:
        return None
    truth = [a for a in usable if a.get("ground_truth")]
    return max(truth or usable, key=lambda a: a.get("id") if isinstance(a.get("id"), int) else -1)


def _size(result: dict, where: str) -> tuple[float, float]:
    width, height = (result.get(key) for key in ("original_width", "original_height"))
    if not all(type(v) is int and v > 0 for v in (width, height)):
        raise AnnotationError(
            f"{where}: original_width / original_height are {width!r} / {height!r}, not the image's size "
            "in pixels; export again from Label Studio",
            reason="bad geometry",
        )
    return width, height


def _rect(value: dict, width: int, height: int, where: str, label: str, origin: str) -> Region:
    x, y, w, h = (number(value.get(k), k, where, _FIX) for k in ("x", "y", "width", "height"))
    x, y, w, h = x * width / 100, y * height / 100, w * width / 100, h * height / 100
    angle = math.radians(number(value.get("rotation", 0), "rotation", where, _FIX))
    if angle == 0.0:
        return Region(label=label, shape="rect", geometry={"x": x, "y": y, "width": w, "height": h}, origin=origin)
    cos, sin = math.cos(angle), math.sin(angle)  # y down: a positive angle turns clockwise
    corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    points = tuple((x + dx * cos - dy * sin, y + dx * sin + dy * cos) for dx, dy in corners)
    return Region(label=label, shape="polygon", points=points, origin=origin)


def _region(result: dict, kind: str, label: str, where: str, origin: str) -> Region:
    value = result.get("value")
    if not isinstance(value, dict):
        raise AnnotationError(f"{where}: 'value' is not an object; {_FIX}", reason="bad geometry")
    width, height = _size(result, where)
    if kind == "rectanglelabels":
        return _rect(value, width, height, where, label, origin)
    if kind == "ellipselabels":
        cx, cy, rx, ry = (number(value.get(k), k, where, _FIX) for k in ("x", "y", "radiusX", "radiusY"))
        theta = math.radians(number(value.get("rotation", 0), "rotation", where, _FIX))
        geometry = {"cx": cx * width / 100, "cy": cy * height / 100, "rx": rx * width / 100, "ry": ry * height / 100}
        return Region(label=label, shape="ellipse", geometry={**geometry, "theta": theta}, origin=origin)
    if kind == "brushlabels":
        if value.get("format", "rle") != "rle":
            raise AnnotationError(
                f"{where}: brush format {value.get('format')!r}, not 'rle'; {_FIX}", reason="bad geometry"
            )
        full = np.asfortranarray(decode_brush_rle(value.get("rle"), height, width, where).astype(np.uint8))
        rle = {"counts": coco_mask.encode(full)["counts"].decode("ascii"), "size": [height, width]}
        return Region(label=label, shape="mask", geometry=rle, origin=origin)
    if kind == "keypointlabels":
        x, y = (number(value.get(k), k, where, _FIX) for k in ("x", "y"))
        return Region(label=label, shape="point", points=((x * width / 100, y * height / 100),), origin=origin)
    points = [
        (x * width / 100, y * height / 100) for x, y in points_from_pairs(value.get("points"), "points", where, _FIX)
    ]
    shape = "polyline" if value.get("closed") is False else "polygon"
    if len(points) < (3 if shape == "polygon" else 2):
        raise AnnotationError(f"{where}: a {shape} with {len(points)} points; {_FIX}", reason="bad geometry")
    return Region(label=label, shape=shape, points=tuple(points), origin=origin)


def _label(result: dict, kind: str, labels: dict[str, list], where: str) -> str:
    names = (result.get("value") or {}).get(kind, labels.get(str(result.get("id")), []))
    if not isinstance(names, list) or len(names) > 1 or not all(isinstance(n, str) for n in names):
        raise AnnotationError(
            f"{where}: {kind} is {names!r}; a region needs one label (segmentation paints one class); {_FIX}",
            reason="no label",
        )
    return names[0].strip() if names else ""  # empty: fetch gives it fetch.default_label


def parse_label_studio(
    path: Path, data: Any, drops: Drops | None = None, images: Path | None = None
) -> list[ImageAnnotation]:
    """A Label Studio JSON export, already parsed from `path`; image names relative to `images`."""
    drops = drops or Drops()
    if not is_label_studio_export(data):
        raise AnnotationError(
            f"{path}: not a Label Studio JSON export (a list of tasks with 'data' and 'annotations'); "
            "export the project as JSON (not JSON_MIN) from Label Studio",
            reason="unreadable file",
        )
    files = ImageFiles.of_annotations(path, images)
    records = []
    for number_, task in enumerate(data):
        where = f"{path} task id {task.get('id', f'#{number_}')!r}"
        try:
            filename = _resolve(files, _image_url(task, where), where)
            annotation = _annotation(task, where)
        except AnnotationError as exc:
            drops.bad(exc)
            continue
        if annotation is None:
            drops.note("not annotated", f"{where} ({filename}): no annotation (or only skipped ones); left out")
            continue
        results = [r for r in annotation.get("result") or [] if isinstance(r, dict)]
        labels = {str(r.get("id")): (r.get("value") or {}).get("labels") for r in results if r.get("type") == "labels"}
        regions = []
        for result in results:
            kind = _UNLABELLED.get(str(result.get("type")), result.get("type"))
            if kind not in LABEL_STUDIO_TYPES:
                continue  # choices, text, relations...: no pixels
            shape_where = f"{where} result {result.get('id')!r} ({result.get('type')})"
            origin = f"{path.name} task {task.get('id')} result {result.get('id')}"
            try:
                label = _label(result, kind, labels, shape_where)
                regions.append(_region(result, kind, label, shape_where, origin))
            except AnnotationError as exc:
                drops.bad(exc)
        records.append(
            ImageAnnotation(filename=filename, regions=tuple(regions), origin=f"{path.name} task {task.get('id')}")
        )
    return records


def read_label_studio_tags(path: Path) -> list[str]:
    """The image-level tags (``choices`` results) of the annotations the reader uses, in file order."""
    data = load_json(path, "Label Studio")
    tags: list[str] = []
    for task in data if is_label_studio_export(data) else []:
        try:
            annotation = _annotation(task, str(path))
        except AnnotationError:
            continue  # the reader reports it
        for result in (annotation or {}).get("result") or []:
            if isinstance(result, dict) and result.get("type") == "choices":
                choices = (result.get("value") or {}).get("choices") or []
                tags += [c for c in choices if isinstance(c, str) and c.strip() and c not in tags]
    return tags


def read_label_studio(
    path: Path, label_key: str = "", drops: Drops | None = None, images: Path | None = None
) -> list[ImageAnnotation]:
    """Read a Label Studio JSON export file; `label_key` is unused (each result names its label)."""
    return parse_label_studio(path, load_json(path, "Label Studio"), drops, images)


def _read(source: Source, options: ReadOptions) -> list[ImageAnnotation]:
    return parse_label_studio(source.path, source.json(), options.drops, images=options.images)


READER = Reader(
    name="label_studio",
    detect=lambda source: is_label_studio_export(source.sniff_json()),
    read=_read,
    labels=read_label_studio_tags,
)
