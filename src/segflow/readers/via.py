"""Read VIA (VGG Image Annotator) exports into canonical `ImageAnnotation` records.

* `read_via_csv`: the CSV export of VIA 1.x (header starts ``#filename``) and 2.x.
  One row per region; an image without regions has one row with shape ``{}``.
* `read_via_json`: the JSON annotation export of VIA 1.x and 2.x (an object keyed by
  ``filename+size`` or by filename) and the VIA 2.x project file, whose
  ``_via_img_metadata`` holds that same object. Regions are a list, or (VIA 1.x) an
  object keyed by region id, read in numeric id order.

Regions are numbered as VIA numbers them: from 0, the CSV ``region_id``. Both readers
name every region's source in `Region.origin` so later errors can point back at it.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

from segflow.errors import AnnotationError
from segflow.records import SHAPES, ImageAnnotation, Region

__all__ = ["CSV_COLUMNS", "read_via_csv", "read_via_json"]

log = logging.getLogger(__name__)

#: Columns of a VIA CSV export, in VIA's order (VIA 1.x writes the first as "#filename").
CSV_COLUMNS = (
    "filename", "file_size", "file_attributes", "region_count", "region_id",
    "region_shape_attributes", "region_attributes",
)

# Named numbers each shape needs; polygon and polyline carry point lists instead.
_GEOMETRY_KEYS = {
    "rect": ("x", "y", "width", "height"),
    "circle": ("cx", "cy", "r"),
    "ellipse": ("cx", "cy", "rx", "ry"),
    "point": ("cx", "cy"),
}
# Fewest distinct vertices that make the shape (records.py): an area, or a line.
_MIN_POINTS = {"polygon": 3, "polyline": 2}
_REDRAW = "fix the value or redraw the region in VIA"


def _number(value: Any, key: str, where: str) -> float:
    """Return `value` as a float, or raise naming `key`."""
    # bool is an int subclass, but `true` is no coordinate; NaN and inf paint nothing.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise AnnotationError(f"{where}: {key} is {value!r}, not a number; {_REDRAW}")
    return float(value)


def _field(shape: dict[str, Any], key: str, where: str) -> Any:
    """Return `shape[key]`, or raise naming the key and the keys the shape does have."""
    if key not in shape:
        raise AnnotationError(
            f"{where}: {shape['name']} has no {key!r} (it has {sorted(shape)}); {_REDRAW}"
        )
    return shape[key]


def _points(shape: dict[str, Any], where: str) -> tuple[tuple[float, float], ...]:
    """Vertices of a polygon or polyline from VIA's ``all_points_x/y`` lists."""
    name = shape["name"]
    columns = {key: _field(shape, key, where) for key in ("all_points_x", "all_points_y")}
    for key, values in columns.items():
        if not isinstance(values, list):
            raise AnnotationError(f"{where}: {key} is {values!r}, not a list of numbers; {_REDRAW}")
    xs, ys = columns["all_points_x"], columns["all_points_y"]
    if len(xs) != len(ys):
        raise AnnotationError(
            f"{where}: {name} has {len(xs)} all_points_x but {len(ys)} all_points_y; {_REDRAW}"
        )
    points = [
        (_number(x, f"all_points_x[{i}]", where), _number(y, f"all_points_y[{i}]", where))
        for i, (x, y) in enumerate(zip(xs, ys))
    ]
    # Records close polygons implicitly; some tools repeat the first vertex at the end.
    if name == "polygon" and len(points) > 1 and points[-1] == points[0]:
        points.pop()
    needed, distinct = _MIN_POINTS[name], len(set(points))  # a repeated vertex adds nothing
    if distinct < needed:
        raise AnnotationError(
            f"{where}: {name} has {distinct} points, needs at least {needed}; "
            "delete the region or redraw it"
        )
    return tuple(points)


def _label(attributes: Any, key: str, where: str) -> str:
    """The region's label: ``attributes[key]``, text or a one-option checkbox dict."""
    if not isinstance(attributes, dict):
        raise AnnotationError(
            f"{where}: region_attributes is {attributes!r}, not a JSON object; "
            "export the annotations again from VIA"
        )
    value = attributes.get(key)
    if isinstance(value, dict):
        # VIA stores checkbox attributes as {"option": true, ...}: one must be ticked.
        checked = [option.strip() for option, on in value.items() if on and option.strip()]
        if len(checked) == 1:
            return checked[0]
        raise AnnotationError(
            f"{where}: region_attributes[{key!r}] has {len(checked)} options ticked "
            f"{checked} of {sorted(value)}, needs exactly one; tick one option in VIA"
        )
    if isinstance(value, str) and value.strip():
        return value.strip()
    problem = f"[{key!r}] is {value!r}, not a label" if key in attributes else f" has no {key!r}"
    raise AnnotationError(
        f"{where}: region_attributes{problem}; it has {sorted(attributes)}: "
        "set fetch.label_key in params.yaml, or label the region in VIA"
    )


def _region(shape: Any, attributes: Any, label_key: str, where: str, origin: str) -> Region:
    """Build one `Region` from VIA's shape and region attributes; `where` prefixes errors."""
    if not isinstance(shape, dict):
        raise AnnotationError(
            f"{where}: shape attributes are {shape!r}, not a JSON object; "
            "export the annotations again from VIA"
        )
    name = shape.get("name")
    if name not in SHAPES:
        raise AnnotationError(
            f"{where}: unknown shape {name!r}; known shapes are {list(SHAPES)}; "
            "redraw the region as one of them"
        )
    label = _label(attributes, label_key, where)
    if name in _MIN_POINTS:
        return Region(label=label, shape=name, points=_points(shape, where), origin=origin)
    geometry = {key: _number(_field(shape, key, where), key, where) for key in _GEOMETRY_KEYS[name]}
    if name == "point":
        point = ((geometry["cx"], geometry["cy"]),)
        return Region(label=label, shape=name, points=point, origin=origin)
    if name == "ellipse":
        # Older VIA versions write no theta: their ellipses are never rotated.
        geometry["theta"] = _number(shape.get("theta", 0), "theta", where)
    return Region(label=label, shape=name, geometry=geometry, origin=origin)


def _image(filename: str, regions: list[Region], origin: str) -> ImageAnnotation:
    """Build one `ImageAnnotation`, warning about regions drawn twice."""
    unique = {(r.label, r.shape, r.points, tuple(sorted(r.geometry.items()))) for r in regions}
    if len(unique) < len(regions):  # kept: a duplicate only paints the same pixels again
        repeats = len(regions) - len(unique)
        log.warning("image %s: %d regions repeat another exactly (%s)", filename, repeats, origin)
    return ImageAnnotation(filename=filename, regions=tuple(regions), origin=origin)


def _read_text(path: Path) -> str:
    """The file's text, undecoded newlines kept (quoted CSV cells may hold them)."""
    try:
        return path.read_bytes().decode("utf-8-sig")  # VIA on Windows may write a BOM
    except OSError as exc:
        raise AnnotationError(f"{path}: cannot read the file ({exc}); check the path") from exc
    except UnicodeDecodeError as exc:
        raise AnnotationError(f"{path}: not UTF-8 text ({exc}); export it again from VIA") from exc


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank CSV records of `path`, each with the file line it starts on."""
    rows: list[tuple[int, list[str]]] = []
    # Row numbers are 1-based file line numbers with the header as row 1, the number
    # an editor shows; a quoted cell may span lines, so a record starts one line
    # after the previous record ended.
    end = 0
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in row):
                rows.append((start, row))
    except csv.Error as exc:
        raise AnnotationError(
            f"{path} row {end + 1}: not valid CSV ({exc}); fix the row or export it again from VIA"
        ) from exc
    return rows


def _json_cell(text: str, column: str, where: str) -> Any:
    """Parse one JSON-valued CSV cell, naming the column if it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problem = exc.msg.removesuffix(" at")  # "Invalid control character at"
        raise AnnotationError(
            f"{where}: {column} is not valid JSON: {problem} at char {exc.pos}; "
            "fix the row or export it again from VIA"
        ) from exc


def read_via_csv(path: Path, label_key: str) -> list[ImageAnnotation]:
    """Read a VIA 1.x/2.x CSV export; images in first-appearance order, regions in row order.

    Args:
        path: the CSV file.
        label_key: the region attribute holding the label, e.g. ``"labels"``.
    """
    rows = _csv_rows(path)
    if not rows:
        raise AnnotationError(f"{path}: the file is empty; export the annotations again from VIA")
    header = [name.strip() for name in rows[0][1]]
    header[0] = header[0].removeprefix("#")  # VIA 1.x writes "#filename"
    missing = [column for column in CSV_COLUMNS if column not in header]
    if missing:
        raise AnnotationError(
            f"{path}: the header has no column(s) {missing}; expected {list(CSV_COLUMNS)}: "
            "export the annotations as CSV from VIA again"
        )
    index = {column: header.index(column) for column in CSV_COLUMNS}
    images: dict[str, list[Region]] = {}
    origins: dict[str, str] = {}
    for row_number, row in rows[1:]:
        if len(row) < len(header):
            raise AnnotationError(
                f"{path} row {row_number}: {len(row)} cells but the header has {len(header)}; "
                "fix the row or export it again from VIA"
            )
        filename = row[index["filename"]]
        where = f"{path} row {row_number} (image {filename})"
        if not filename.strip():
            raise AnnotationError(f"{where}: filename is empty; fix the row or delete it")
        shape = _json_cell(row[index["region_shape_attributes"]], "region_shape_attributes", where)
        attributes = _json_cell(row[index["region_attributes"]], "region_attributes", where)
        origin = f"{path.name} row {row_number}"
        regions = images.setdefault(filename, [])
        origins.setdefault(filename, origin)
        if shape == {}:  # VIA's row for an image without regions
            continue
        regions.append(_region(shape, attributes, label_key, where, origin))
    return [_image(name, regions, origins[name]) for name, regions in images.items()]


def _ordered_regions(regions: Any, where: str) -> list[tuple[str, Any]]:
    """(region id, region) pairs: list order, or numeric id order for VIA 1.x dicts."""
    if isinstance(regions, list):
        return [(str(number), region) for number, region in enumerate(regions)]
    if isinstance(regions, dict):
        try:
            ids = sorted(regions, key=int)  # VIA 1.x ids are "0", "1", ... maybe with gaps
        except ValueError as exc:
            raise AnnotationError(
                f"{where}: region ids {list(regions)} are not all whole numbers; "
                "export the annotations again from VIA"
            ) from exc
        return [(region_id, regions[region_id]) for region_id in ids]
    raise AnnotationError(
        f"{where}: 'regions' is {type(regions).__name__}, expected a list or an object "
        "keyed by region id; export the annotations again from VIA"
    )


def read_via_json(path: Path, label_key: str) -> list[ImageAnnotation]:
    """Read a VIA 1.x/2.x JSON annotation export or a VIA 2.x project file.

    Args:
        path: the JSON file.
        label_key: the region attribute holding the label, e.g. ``"labels"``.
    """
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise AnnotationError(
            f"{path} line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg}); "
            "the file may be truncated: export the annotations again from VIA"
        ) from exc
    metadata = data.get("_via_img_metadata", data) if isinstance(data, dict) else data
    if not isinstance(metadata, dict):
        raise AnnotationError(
            f"{path}: expected a JSON object keyed by image, found {type(metadata).__name__}; "
            "export the annotations as JSON from VIA 1.x or 2.x"
        )
    images: dict[str, list[Region]] = {}
    origins: dict[str, str] = {}
    for key, entry in metadata.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("filename"), str):
            raise AnnotationError(
                f"{path} record {key!r}: no 'filename', so not a VIA 1.x/2.x image record "
                "(VIA 3 projects are not supported); export the annotations as JSON from VIA 2"
            )
        filename = entry["filename"]
        record = f"{path} image {filename!r}"
        if "regions" not in entry:
            raise AnnotationError(f"{record}: no 'regions'; export the annotations again from VIA")
        if filename in images:
            log.warning("%s: second record %r for this image; merging its regions", record, key)
        regions = images.setdefault(filename, [])
        origins.setdefault(filename, f"{path.name} image {filename!r}")
        for region_id, region in _ordered_regions(entry["regions"], record):
            where = f"{record} region {region_id}"
            if not isinstance(region, dict) or "shape_attributes" not in region:
                raise AnnotationError(f"{where}: no 'shape_attributes'; redraw the region in VIA")
            origin = f"{path.name} image {filename!r} region {region_id}"
            shape, attributes = region["shape_attributes"], region.get("region_attributes", {})
            regions.append(_region(shape, attributes, label_key, where, origin))
    return [_image(name, regions, origins[name]) for name, regions in images.items()]
