"""Read VIA (VGG Image Annotator) exports into canonical `ImageAnnotation` records.

* `read_via_csv`: the CSV export of VIA 1.x (header starts ``#filename``) and 2.x.
  One row per region; an image without regions has one row with shape ``{}``.
* `read_via_json`: the JSON annotation export of VIA 1.x and 2.x (an object keyed by
  ``filename+size`` or by filename) and the VIA 2.x project file, whose
  ``_via_img_metadata`` holds that same object. Regions are a list, or (VIA 1.x) an
  object keyed by region id, read in numeric id order.

Regions are numbered as VIA numbers them: from 0, the CSV ``region_id``. Both readers
name every region's source in `Region.origin` so later errors can point back at it.
A bad row or region raises, or with a non-strict `Drops` is dropped and counted. A region
without a label (``region_attributes`` ``{}``, common in one-class sets) gets an empty label,
which fetch replaces by ``fetch.default_label``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any

from segflow.data.drops import Drops
from segflow.data.readers.base import Reader, ReadOptions, Source
from segflow.data.readers.common import load_json, read_text
from segflow.data.readers.via_regions import VIA_SHAPES, via_image, via_region, warn_unlabeled
from segflow.data.records import ImageAnnotation, Region
from segflow.errors import AnnotationError

__all__ = ["CSV_COLUMNS", "VIA_SHAPES", "CSV_READER", "JSON_READER", "read_via_csv", "read_via_json", "parse_via_json"]

log = logging.getLogger(__name__)

#: Columns of a VIA CSV export, in VIA's order (VIA 1.x writes the first as "#filename").
CSV_COLUMNS = (
    "filename",
    "file_size",
    "file_attributes",
    "region_count",
    "region_id",
    "region_shape_attributes",
    "region_attributes",
)


def _csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """Non-blank CSV records of `path`, each with the file line it starts on."""
    rows: list[tuple[int, list[str]]] = []
    # Row numbers are 1-based file line numbers with the header as row 1, the number
    # an editor shows; a quoted cell may span lines, so a record starts one line
    # after the previous record ended.
    end = 0
    text = read_text(path, "VIA")
    reader = csv.reader(io.StringIO(text, newline=""))
    # A cell may be as long as the file (a polygon of 100k points from an automatic tool
    # passes csv's default limit of 128 KiB); the limit is global, so it is put back after.
    # 2**31 - 1: the largest a C long holds everywhere.
    default = csv.field_size_limit(max(csv.field_size_limit(), min(len(text) + 1, 2**31 - 1)))
    try:
        for row in reader:
            start, end = end + 1, reader.line_num
            if any(cell.strip() for cell in row):
                rows.append((start, row))
    except csv.Error as exc:
        raise AnnotationError(
            f"{path} row {end + 1}: not valid CSV ({exc}); fix the row or export it again from VIA"
        ) from exc
    finally:
        csv.field_size_limit(default)
    return rows


def _json_cell(text: str, column: str, where: str) -> Any:
    """Parse one JSON-valued CSV cell, naming the column if it is not JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise AnnotationError(
            f"{where}: {column} is JSON nested deeper than Python can parse (an annotation nests under 10); "
            "fix the row or export it again from VIA",
            reason="bad record",
        ) from None
    except json.JSONDecodeError as exc:
        problem = exc.msg.removesuffix(" at")  # "Invalid control character at"
        raise AnnotationError(
            f"{where}: {column} is not valid JSON: {problem} at char {exc.pos}; "
            "fix the row or export it again from VIA",
            reason="bad record",
        ) from exc


def read_via_csv(path: Path, label_key: str, drops: Drops | None = None) -> list[ImageAnnotation]:
    """Read a VIA 1.x/2.x CSV export; images in first-appearance order, regions in row order.

    Args:
        path: the CSV file.
        label_key: the region attribute holding the label, e.g. ``"labels"``.
        drops: where bad rows go; None (or a strict one) raises at the first.
    """
    drops = drops or Drops()
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
    other_keys: set[str] = set()
    for row_number, row in rows[1:]:
        try:
            parsed = _csv_row(path, row_number, row, index, len(header), label_key, other_keys)
        except AnnotationError as exc:
            drops.bad(exc)
            continue
        filename, region = parsed
        regions = images.setdefault(filename, [])
        origins.setdefault(filename, f"{path.name} row {row_number}")
        if region is not None:
            regions.append(region)
    records = [via_image(name, regions, origins[name]) for name, regions in images.items()]
    warn_unlabeled(path, records, label_key, other_keys)
    return records


def _csv_row(
    path: Path, row_number: int, row: list[str], index: dict[str, int], width: int, label_key: str, other_keys: set[str]
) -> tuple[str, Region | None]:
    """(filename, region) of one CSV row; region None for VIA's row of an unannotated image."""
    if len(row) < width:
        raise AnnotationError(
            f"{path} row {row_number}: {len(row)} cells but the header has {width}; "
            "fix the row or export it again from VIA"
        )
    filename = row[index["filename"]]
    where = f"{path} row {row_number} (image {filename})"
    if not filename.strip():
        raise AnnotationError(f"{where}: filename is empty; fix the row or delete it")
    shape = _json_cell(row[index["region_shape_attributes"]], "region_shape_attributes", where)
    attributes = _json_cell(row[index["region_attributes"]], "region_attributes", where)
    if shape == {}:  # VIA's row for an image without regions
        return filename, None
    return filename, via_region(shape, attributes, label_key, where, f"{path.name} row {row_number}", other_keys)


def _ordered_regions(regions: Any, where: str) -> list[tuple[str, Any]]:
    """(region id, region) pairs: list order, or numeric id order for VIA 1.x dicts."""
    if isinstance(regions, list):
        return [(str(number), region) for number, region in enumerate(regions)]
    if isinstance(regions, dict):
        try:
            ids = sorted(regions, key=int)  # VIA 1.x ids are "0", "1", ... maybe with gaps
        except ValueError as exc:
            raise AnnotationError(
                f"{where}: region ids {list(regions)} are not all whole numbers; export the annotations again from VIA"
            ) from exc
        return [(region_id, regions[region_id]) for region_id in ids]
    raise AnnotationError(
        f"{where}: 'regions' is {type(regions).__name__}, expected a list or an object "
        "keyed by region id; export the annotations again from VIA"
    )


def read_via_json(path: Path, label_key: str, drops: Drops | None = None) -> list[ImageAnnotation]:
    """Read a VIA 1.x/2.x JSON annotation export or a VIA 2.x project file.

    Args:
        path: the JSON file.
        label_key: the region attribute holding the label, e.g. ``"labels"``.
        drops: where bad regions go; None (or a strict one) raises at the first.
    """
    return parse_via_json(path, load_json(path, "VIA"), label_key, drops)


def parse_via_json(path: Path, data: Any, label_key: str, drops: Drops | None = None) -> list[ImageAnnotation]:
    """`read_via_json` on JSON already parsed from `path`."""
    drops = drops or Drops()
    metadata = data.get("_via_img_metadata", data) if isinstance(data, dict) else data
    if not isinstance(metadata, dict):
        raise AnnotationError(
            f"{path}: expected a JSON object keyed by image, found {type(metadata).__name__}; "
            "export the annotations as JSON from VIA 1.x or 2.x"
        )
    images: dict[str, list[Region]] = {}
    origins: dict[str, str] = {}
    other_keys: set[str] = set()
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
        try:
            ordered = _ordered_regions(entry["regions"], record)
        except AnnotationError as exc:
            drops.bad(exc)
            continue
        for region_id, region in ordered:
            where = f"{record} region {region_id}"
            origin = f"{path.name} image {filename!r} region {region_id}"
            try:
                if not isinstance(region, dict) or "shape_attributes" not in region:
                    raise AnnotationError(
                        f"{where}: no 'shape_attributes'; redraw the region in VIA",
                        reason="bad geometry",
                    )
                shape, attributes = region["shape_attributes"], region.get("region_attributes", {})
                regions.append(via_region(shape, attributes, label_key, where, origin, other_keys))
            except AnnotationError as exc:
                drops.bad(exc)
    records = [via_image(name, regions, origins[name]) for name, regions in images.items()]
    warn_unlabeled(path, records, label_key, other_keys)
    return records


def _is_via_json(source: Source) -> bool:
    """A JSON object of image records with ``filename`` and ``regions``, or a 2.x project file."""
    data = source.sniff_json()
    return isinstance(data, dict) and (
        "_via_img_metadata" in data
        or any(isinstance(entry, dict) and "filename" in entry and "regions" in entry for entry in data.values())
    )


def _read_csv(source: Source, options: ReadOptions) -> list[ImageAnnotation]:
    return read_via_csv(source.path, options.label_key, options.drops)


def _read_json(source: Source, options: ReadOptions) -> list[ImageAnnotation]:
    return parse_via_json(source.path, source.json(), options.label_key, options.drops)


#: Any ``.csv`` is VIA's (no other tool here writes CSV).
CSV_READER = Reader(name="via_csv", detect=lambda source: source.suffix == ".csv", read=_read_csv)
JSON_READER = Reader(name="via_json", detect=_is_via_json, read=_read_json)
