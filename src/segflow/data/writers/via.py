"""VIA 2.x annotations: the JSON and CSV that VIA's Annotation > Import annotations reads.

The JSON is VIA 2.x's annotation export: an object keyed by file name + byte size (VIA's
own key, so imported regions land on the image with that name and size), each with
``filename``, ``size``, ``regions`` (``shape_attributes`` + ``region_attributes``) and
``file_attributes``. The CSV is the same, one row per region (`segflow.data.readers.via`
reads both). Polygons only: predictions are polygons.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from segflow.data.readers.via import CSV_COLUMNS
from segflow.data.records import Region
from segflow.data.writers.common import ExportImage, number
from segflow.errors import SegflowError

__all__ = ["write_via_json", "write_via_csv"]


def _shape(region: Region) -> dict:
    if region.shape != "polygon":
        raise SegflowError(f"{region.origin}: the VIA writer writes polygons, not a {region.shape}")
    return {
        "name": "polygon",
        "all_points_x": [number(x) for x, _ in region.points],
        "all_points_y": [number(y) for _, y in region.points],
    }


def _compact(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"))  # as VIA writes its cells


def write_via_json(images: list[ExportImage], path: Path, label_key: str = "label") -> Path:
    """VIA 2.x annotation JSON of `images` at `path`."""
    payload = {
        f"{image.record.filename}{image.file_size}": {
            "filename": image.record.filename,
            "size": image.file_size,
            "regions": [
                {"shape_attributes": _shape(region), "region_attributes": {label_key: region.label}}
                for region in image.record.regions
            ],
            "file_attributes": {},
        }
        for image in images
    }
    path.write_text(json.dumps(payload, indent=1))
    return path


def write_via_csv(images: list[ExportImage], path: Path, label_key: str = "label") -> Path:
    """VIA 2.x annotation CSV of `images` at `path`: a row per region, one ``{}`` row for an
    image without regions (as VIA exports it)."""
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for image in images:
            name, size, regions = image.record.filename, image.file_size, image.record.regions
            if not regions:
                writer.writerow([name, size, "{}", 0, 0, "{}", "{}"])
            for number_, region in enumerate(regions):
                attributes = _compact({label_key: region.label})
                writer.writerow([name, size, "{}", len(regions), number_, _compact(_shape(region)), attributes])
    return path
