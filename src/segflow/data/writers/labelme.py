"""LabelMe JSON, one file per image, as LabelMe saves it (``shapes`` of type polygon).

A file mirrors its image's path with ``.json`` for the suffix, and names the image by
its bare file name (``imagePath``), without embedding it (``imageData`` null): copy the
files beside the images and LabelMe opens each image with its predicted polygons.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

from segflow.data.writers.common import ExportImage, number
from segflow.errors import SegflowError

__all__ = ["LABELME_VERSION", "write_labelme"]

#: The LabelMe file format version written (LabelMe 5 reads files of any 5.x).
LABELME_VERSION = "5.2.1"


def write_labelme(images: list[ExportImage], folder: Path) -> list[Path]:
    """One LabelMe JSON per image below `folder`; returns the files written."""
    written = []
    for image in images:
        shapes = []
        for region in image.record.regions:
            if region.shape != "polygon":
                raise SegflowError(f"{region.origin}: the LabelMe writer writes polygons, not a {region.shape}")
            shapes.append(
                {
                    "label": region.label,
                    "points": [[number(x), number(y)] for x, y in region.points],
                    "group_id": None,
                    "description": "",
                    "shape_type": "polygon",
                    "flags": {},
                }
            )
        name = PurePosixPath(image.record.filename)
        payload = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": shapes,
            "imagePath": name.name,
            "imageData": None,
            "imageHeight": image.height,
            "imageWidth": image.width,
        }
        path = folder / name.with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1))
        written.append(path)
    return written
