"""Predicted masks -> polygons in the user's annotation tool's format (pre-annotation).

Each mask written by `segflow.predict.segment` is traced (`segflow.data.trace.polygons`:
several parts of a class are several polygons, holes are polygons of the class inside
them, painted after the region around them; simplified by ``predict.simplify`` pixels;
parts under ``predict.min_area`` pixels left out), its labels renamed to the user's own
(`segflow.data.writers.export_labels`), and written by `segflow.data.writers.write_export`.
The class of unannotated pixels (``rasterize.unlabeled``) is traced only where it makes
holes: the rest of it is what no polygon covers, as in the user's own annotations.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from segflow.data.records import ImageAnnotation, Region
from segflow.data.trace import polygons
from segflow.data.writers import ExportImage, write_export
from segflow.predict.segment import Outcome

__all__ = ["export_annotations"]


def export_annotations(
    outcomes: list[Outcome],
    folder: Path,
    fmt: str,
    class_names: list[str],
    labels: list[str],
    *,
    simplify: float,
    min_area: int,
    background: int | None,
    label_key: str = "label",
) -> list[Path]:
    """Write the polygons of every photo with a mask in `outcomes` for the tool `fmt` into
    `folder`; `labels` (one per class) name them. Returns the files written."""
    rename = dict(zip(class_names, labels))
    images = []
    for outcome in outcomes:
        if outcome.record is None:
            continue
        with Image.open(outcome.files["mask"]) as png:
            mask = np.asarray(png)
        traced = polygons(mask, class_names, simplify, min_area, background)
        regions = tuple(
            Region(
                label=rename[region["label"]],
                shape="polygon",
                points=tuple(tuple(point) for point in region["points"]),
                origin=f"{outcome.name} {region['origin']}",
            )
            for region in traced
        )
        record = ImageAnnotation(filename=outcome.name, regions=regions, origin=outcome.name)
        images.append(ExportImage(record, mask.shape[0], mask.shape[1], outcome.record["bytes"]))
    return write_export(fmt, images, folder, labels, label_key)
