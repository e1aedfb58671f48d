"""COCO instances JSON: one annotation per predicted polygon, every label a category.

``images`` (id, file_name, width, height), ``categories`` (ids from 1 in class order),
``annotations`` (a one-ring polygon ``segmentation``, its ``area``, ``bbox`` and
``iscrowd: 0``), in paint order: `segflow.data.readers.coco` keeps the file's order, and
later annotations paint over earlier ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from segflow.data.writers.common import ExportImage, flat_points, number
from segflow.errors import SegflowError

__all__ = ["write_coco"]


def _area(points: tuple[tuple[float, float], ...]) -> float:
    xs, ys = np.asarray(points, dtype=np.float64).T
    return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)  # shoelace


def write_coco(images: list[ExportImage], path: Path, labels: list[str]) -> Path:
    """COCO instances JSON of `images` at `path`; `labels`: the categories, in class order."""
    categories = {label: cid for cid, label in enumerate(dict.fromkeys(labels), start=1)}
    annotations = []
    for image_id, image in enumerate(images, start=1):
        for region in image.record.regions:
            if region.shape != "polygon":
                raise SegflowError(f"{region.origin}: the COCO writer writes polygons, not a {region.shape}")
            if region.label not in categories:
                raise SegflowError(f"{region.origin}: label {region.label!r} is not among the categories {labels}")
            xs, ys = [x for x, _ in region.points], [y for _, y in region.points]
            box = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": categories[region.label],
                    "segmentation": [flat_points(region.points)],
                    "area": round(_area(region.points), 2),
                    "bbox": [number(v) for v in box],
                    "iscrowd": 0,
                }
            )
    payload = {
        "info": {"description": "segflow predictions"},
        "licenses": [],
        "images": [
            {"id": image_id, "file_name": image.record.filename, "width": image.width, "height": image.height}
            for image_id, image in enumerate(images, start=1)
        ],
        "categories": [{"id": cid, "name": label, "supercategory": ""} for label, cid in categories.items()],
        "annotations": annotations,
    }
    path.write_text(json.dumps(payload))
    return path
