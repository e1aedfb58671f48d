"""Read a "CVAT for images 1.1" XML export (root ``<annotations>``) into canonical records.

Each ``<image>`` is one record; its shapes become regions:

==============  =======================================  ==================================
CVAT element    attributes read                          record
==============  =======================================  ==================================
``polygon``     ``points`` ("x,y;x,y;...")               polygon
``box``         ``xtl ytl xbr ybr``, ``rotation``        rect, or a 4-corner polygon when
                (degrees, clockwise)                     rotated
``ellipse``     ``cx cy rx ry``, ``rotation``            ellipse
``polyline``    ``points``                               polyline (rasterize decides)
``points``      ``points``                               one point per vertex (likewise)
``mask``        ``rle`` over the box ``left top width    mask (a full-image COCO RLE)
                height``: runs of 0 then 1, row-major
``tag``         (an image-level label, no pixels)        nothing
==============  =======================================  ==================================

Paint order: regions are sorted by ``z_order`` (lowest first, file order among equal ones)
and carry it as `Region.z`, which outranks ``rasterize.order: area`` too.

Image names resolve against the images folder (``fetch.images``; by default the XML's
folder): a name that is not a file there is matched by its path's tail among the files
below it (CVAT writes bare names while people keep images in sub-folders, or in the
``images/`` folder of CVAT's own dataset export); a name matching several files is an
error. An image the XML lists but the disk lacks is a bad record: an error, or dropped
and counted with ``fetch.bad_records: skip``. An image file on disk that the XML does not
list (a frame deleted from the task) is not annotated: fetch leaves it out, warns and
counts it (`segflow.data.collect`, "uncovered" images).

The labels the XML declares (``<meta>``, also those never used) are read by
`read_cvat_labels`.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
from pycocotools import mask as coco_mask

from segflow.data.drops import Drops
from segflow.data.readers.base import Reader, ReadOptions, Source
from segflow.data.readers.image_files import ImageFiles
from segflow.data.records import ImageAnnotation, Region
from segflow.errors import AnnotationError

__all__ = ["CVAT_SHAPES", "READER", "is_cvat_xml", "read_cvat", "read_cvat_labels"]

#: CVAT shape elements this reader turns into regions (``tag`` is read and has no pixels).
CVAT_SHAPES = ("polygon", "box", "ellipse", "polyline", "points", "mask")
_FIX = "fix the shape in CVAT or delete it, and export again"
# How many vertices a shape needs.
_FEWEST = {"polygon": 3, "polyline": 2, "points": 1}


def _parse(path: Path) -> ET.Element:
    """The XML's root element, or an error naming the line and column."""
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        raise AnnotationError(
            f"{path} line {line} column {column}: not valid XML ({exc}); the file may be "
            "truncated: export the annotations again from CVAT",
            reason="unreadable file",
        ) from None
    except OSError as exc:
        raise AnnotationError(
            f"{path}: cannot read the file ({exc}); check the path", reason="unreadable file"
        ) from None


def is_cvat_xml(path: Path) -> bool:
    """Whether `path` is XML whose root element is ``<annotations>`` (read up to the root only).

    Raises:
        AnnotationError: the file cannot be read or is not XML.
    """
    try:
        for _, element in ET.iterparse(path, events=("start",)):
            return element.tag == "annotations"
    except ET.ParseError:
        _parse(path)  # raises with the line and column
    except OSError as exc:
        raise AnnotationError(
            f"{path}: cannot read the file ({exc}); check the path", reason="unreadable file"
        ) from None
    return False


def read_cvat_labels(path: Path) -> list[str]:
    """The label names declared in the XML's ``<meta>``, in its order (sub-labels of skeletons left out)."""
    labels = []
    for label in _parse(path).iterfind("meta/*/labels/label"):
        name = (label.findtext("name") or "").strip()
        if name and not (label.findtext("parent") or "").strip() and name not in labels:
            labels.append(name)
    return labels


def _number(element: ET.Element, key: str, where: str) -> float:
    """Attribute `key` of `element` as a finite float."""
    text = element.get(key)
    try:
        value = float(text) if text is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise AnnotationError(f"{where}: {key} is {text!r}, not a number; {_FIX}", reason="bad geometry")
    return value


def _whole(element: ET.Element, key: str, where: str) -> int:
    """Attribute `key` as a whole number >= 0."""
    value = _number(element, key, where)
    if value < 0 or value != int(value):
        raise AnnotationError(
            f"{where}: {key} is {element.get(key)!r}, not a whole number >= 0; {_FIX}", reason="bad geometry"
        )
    return int(value)


def _points(element: ET.Element, where: str) -> list[tuple[float, float]]:
    """The ``points`` attribute ("x,y;x,y;...") as (x, y) pairs."""
    text = element.get("points") or ""
    points = []
    for i, pair in enumerate(text.split(";") if text.strip() else []):
        try:
            x, y = (float(v) for v in pair.split(","))
        except ValueError:
            x = y = math.nan
        if not (math.isfinite(x) and math.isfinite(y)):
            raise AnnotationError(
                f"{where}: points[{i}] is {pair!r}, not an x,y pair of numbers; {_FIX}", reason="bad geometry"
            )
        points.append((x, y))
    fewest = _FEWEST[element.tag]
    if len(points) < fewest:
        raise AnnotationError(
            f"{where}: a {element.tag} with {len(points)} points, needs at least {fewest}; {_FIX}",
            reason="bad geometry",
        )
    return points


def _box(element: ET.Element, where: str, label: str, origin: str) -> Region:
    """A box: a rect, or the polygon of its corners when rotated (about its centre, clockwise)."""
    xtl, ytl, xbr, ybr = (_number(element, key, where) for key in ("xtl", "ytl", "xbr", "ybr"))
    if xbr < xtl or ybr < ytl:
        raise AnnotationError(
            f"{where}: the box's bottom-right ({xbr}, {ybr}) is above or left of its top-left ({xtl}, {ytl}); {_FIX}",
            reason="bad geometry",
        )
    angle = math.radians(_number(element, "rotation", where)) if element.get("rotation") else 0.0
    if angle == 0.0:
        geometry = {"x": xtl, "y": ytl, "width": xbr - xtl, "height": ybr - ytl}
        return Region(label=label, shape="rect", geometry=geometry, origin=origin)
    cx, cy, cos, sin = (xtl + xbr) / 2, (ytl + ybr) / 2, math.cos(angle), math.sin(angle)
    corners = [(xtl, ytl), (xbr, ytl), (xbr, ybr), (xtl, ybr)]
    points = tuple((cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos) for x, y in corners)
    return Region(label=label, shape="polygon", points=points, origin=origin)


def _mask(element: ET.Element, where: str, height: int, width: int) -> dict:
    """A CVAT mask (runs over its box) as the full image's compressed COCO RLE."""
    left, top, w, h = (_whole(element, key, where) for key in ("left", "top", "width", "height"))
    if height <= 0 or width <= 0:
        raise AnnotationError(
            f"{where}: the <image> has no width and height, which a mask needs; export again from CVAT",
            reason="bad geometry",
        )
    if left + w > width or top + h > height:
        raise AnnotationError(
            f"{where}: the mask's box (left {left}, top {top}, {w}x{h}) exceeds the {width}x{height} image; {_FIX}",
            reason="bad geometry",
        )
    try:
        counts = [int(c) for c in (element.get("rle") or "").split(",")]
    except ValueError:
        counts = [-1]
    if any(c < 0 for c in counts) or sum(counts) != w * h:
        raise AnnotationError(
            f"{where}: rle must be whole numbers >= 0 summing to width * height = {w * h} of the mask's box; {_FIX}",
            reason="bad geometry",
        )
    runs = np.repeat(np.arange(len(counts), dtype=np.uint8) % 2, counts).reshape(h, w)  # row-major, 0s first
    full = np.zeros((height, width), np.uint8, order="F")
    full[top : top + h, left : left + w] = runs
    return {"counts": coco_mask.encode(full)["counts"].decode("ascii"), "size": [height, width]}


def _regions(element: ET.Element, where: str, origin: str, height: int, width: int) -> list[Region]:
    """The regions of one shape element (a ``points`` element gives one per vertex)."""
    kind = element.tag
    if kind not in CVAT_SHAPES:
        raise AnnotationError(
            f"{where}: a CVAT {kind!r}, which segflow does not read; known shapes are {list(CVAT_SHAPES)}; "
            "convert it in CVAT (e.g. to a polygon or mask) or delete it",
            reason="unknown shape",
        )
    label = (element.get("label") or "").strip()  # empty: no label; fetch gives it fetch.default_label
    if kind == "box":
        return [_box(element, where, label, origin)]
    if kind == "ellipse":
        cx, cy, rx, ry = (_number(element, key, where) for key in ("cx", "cy", "rx", "ry"))
        theta = math.radians(_number(element, "rotation", where)) if element.get("rotation") else 0.0
        geometry = {"cx": cx, "cy": cy, "rx": rx, "ry": ry, "theta": theta}
        return [Region(label=label, shape="ellipse", geometry=geometry, origin=origin)]
    if kind == "mask":
        return [Region(label=label, shape="mask", geometry=_mask(element, where, height, width), origin=origin)]
    points = _points(element, where)
    if kind == "points":
        return [
            Region(label=label, shape="point", points=(point,), origin=f"{origin} point {i}")
            for i, point in enumerate(points)
        ]
    if kind == "polygon" and len(points) > 3 and points[-1] == points[0]:
        points.pop()  # records close polygons implicitly
    return [Region(label=label, shape=kind, points=tuple(points), origin=origin)]


def _z_order(element: ET.Element, where: str) -> int:
    text = element.get("z_order") or "0"
    try:
        return int(text)
    except ValueError:
        raise AnnotationError(
            f"{where}: z_order is {text!r}, not a whole number; {_FIX}", reason="bad geometry"
        ) from None


def _image(element: ET.Element, path: Path, files: ImageFiles, drops: Drops) -> ImageAnnotation:
    """One ``<image>`` as a record; its bad shapes go to `drops`."""
    name = element.get("name") or ""
    where = f"{path} image id {element.get('id')!r} ({name!r})"
    if not name.strip():
        raise AnnotationError(f"{where}: the <image> has no name; export again from CVAT", reason="unreadable file")
    filename = files.resolve(name, where, "delete the frame in CVAT")
    height, width = (int(v) if v.isdigit() else 0 for v in (element.get("height", ""), element.get("width", "")))
    ordered: list[tuple[int, list[Region]]] = []
    for number, child in enumerate(element):
        if child.tag == "tag":
            continue  # an image-level label: no pixels to paint
        shape_where = f"{where} shape {number} (<{child.tag}> label {child.get('label')!r})"
        origin = f"{path.name} image {name} shape {number} ({child.tag})"
        try:
            ordered.append((_z_order(child, shape_where), _regions(child, shape_where, origin, height, width)))
        except AnnotationError as exc:
            drops.bad(exc)
    ordered.sort(key=lambda item: item[0])  # stable: file order among equal z_order
    regions = tuple(replace(region, z=z) for z, group in ordered for region in group)
    return ImageAnnotation(filename=filename, regions=regions, origin=f"{path.name} image {name}")


def read_cvat(
    path: Path, label_key: str = "", drops: Drops | None = None, images: Path | None = None
) -> list[ImageAnnotation]:
    """Read a CVAT for images 1.1 XML file; `label_key` is unused (CVAT names each shape's label).

    Args:
        path: the ``annotations.xml`` file.
        drops: where bad records go; None (or a strict one) raises at the first.
        images: the folder image names are relative to; None = the XML's folder.

    Returns:
        One record per ``<image>``, in the file's order; file names are relative to `images`.
    """
    drops = drops or Drops()
    root = _parse(path)
    if root.tag != "annotations":
        raise AnnotationError(
            f"{path}: the root element is <{root.tag}>, not <annotations>, so not a CVAT for images 1.1 "
            "export; export again from CVAT, or set fetch.format",
            reason="unreadable file",
        )
    if root.find("track") is not None:
        raise AnnotationError(
            f'{path}: holds <track> elements, a "CVAT for video 1.1" export; export the task as '
            '"CVAT for images 1.1" instead',
            reason="unreadable file",
        )
    files = ImageFiles.of_annotations(path, images)
    records = []
    for element in root.iterfind("image"):
        try:
            records.append(_image(element, path, files, drops))
        except AnnotationError as exc:
            drops.bad(exc)
    return records


def _read(source: Source, options: ReadOptions) -> list[ImageAnnotation]:
    return read_cvat(source.path, options.label_key, options.drops, images=options.images)


READER = Reader(
    name="cvat",
    detect=lambda source: source.suffix == ".xml" and is_cvat_xml(source.path),
    read=_read,
    labels=read_cvat_labels,
)
