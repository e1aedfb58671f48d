"""Canonical annotation records: what every annotation reader produces.

A reader turns one tool's export (VIA, COCO, LabelMe, Cityscapes) into a list of
`ImageAnnotation`; everything downstream (fetch, rasterize) sees only these records.
They are stored as one JSON file (`annotations.json`) in the fetch snapshot.

Coordinates are in pixels of the original image, x to the right, y down, floats.
Shapes and their geometry:

=========  ==============================================================
shape      geometry
=========  ==============================================================
polygon    ``points``: at least 3 (x, y) vertices, closed implicitly
polyline   ``points``: at least 2 vertices, open (no area)
point      ``points``: exactly 1 vertex (no area)
rect       ``x, y, width, height``
circle     ``cx, cy, r``
ellipse    ``cx, cy, rx, ry, theta`` (theta in radians, clockwise as in VIA)
mask       ``counts, size``: a COCO compressed RLE (``counts`` a string, ``size``
           ``[height, width]``), decoded with pycocotools; for COCO RLE annotations
           and LabelMe mask shapes
=========  ==============================================================

Format version 2 added the mask shape and `ImageAnnotation.split`; version 1 files
(written before) still read.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segflow.errors import AnnotationError

__all__ = [
    "SHAPES",
    "FILLABLE_SHAPES",
    "SPLITS",
    "Region",
    "ImageAnnotation",
    "write_annotations",
    "read_annotations",
]

#: Every shape a region may have.
SHAPES = ("polygon", "polyline", "point", "rect", "circle", "ellipse", "mask")
#: Shapes that enclose an area and so can be painted into a mask.
FILLABLE_SHAPES = ("polygon", "rect", "circle", "ellipse", "mask")
#: Split names an annotation source may assign (Cityscapes' folders), as preprocess uses them.
SPLITS = ("train", "val", "test")

_FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class Region:
    """One annotated region of an image.

    Attributes:
        label: the annotation label as written by the tool (mapped to a class later);
            empty when the region carries none (``fetch.default_label`` names its class).
        shape: one of `SHAPES`.
        points: vertices for polygon, polyline and point; empty otherwise.
        geometry: named numbers for rect, circle and ellipse, the RLE of a mask;
            empty otherwise.
        origin: where the region came from, e.g. ``"via.csv row 7"``, for messages.
        z: an explicit paint layer set by the tool (CVAT's ``z_order``): lower first, and
            it outranks ``rasterize.order: area``; None = the tool gives none (stored
            in ``annotations.json`` only when set).
    """

    label: str
    shape: str
    points: tuple[tuple[float, float], ...] = ()
    geometry: dict[str, Any] = field(default_factory=dict)
    origin: str = ""
    z: int | None = None

    def bounds(self) -> tuple[float, float, float, float] | None:
        """(x_min, y_min, x_max, y_max) of the pixels the shape covers; None for a mask.

        Pixel (i, j) has its centre at x = i, y = j, so a rect covers x .. x + width - 1.
        """
        g = self.geometry
        if self.points:
            xs, ys = [x for x, _ in self.points], [y for _, y in self.points]
            return min(xs), min(ys), max(xs), max(ys)
        if self.shape == "rect":
            return g["x"], g["y"], g["x"] + g["width"] - 1, g["y"] + g["height"] - 1
        if self.shape in ("circle", "ellipse"):
            # A rotated ellipse stays within the circle of its longer radius.
            r = g["r"] if self.shape == "circle" else max(g["rx"], g["ry"])
            return g["cx"] - r, g["cy"] - r, g["cx"] + r, g["cy"] + r
        return None


@dataclass(frozen=True)
class ImageAnnotation:
    """An image and its regions, in the order the tool stored them.

    Attributes:
        filename: image path relative to the annotation source folder.
        regions: the regions; later ones are painted over earlier ones.
        origin: where the record came from, for messages.
        split: "train", "val" or "test" when the source assigns one (Cityscapes'
            folders), kept by preprocess; empty when preprocess should choose.
        image_data: base64 bytes of the image when the annotation embeds it and the
            file is absent (LabelMe ``imageData``); fetch writes them out. Never stored.
    """

    filename: str
    regions: tuple[Region, ...] = ()
    origin: str = ""
    split: str = ""
    image_data: str = field(default="", repr=False)


def write_annotations(images: list[ImageAnnotation], path: Path) -> None:
    """Write records to the canonical JSON file at `path` (without embedded image data)."""
    records = []
    for image in images:
        record = asdict(image)
        del record["image_data"]  # the snapshot holds the image file itself
        for region in record["regions"]:
            if region["z"] is None:
                del region["z"]  # most tools give no layer: keep the file as it was
        records.append(record)
    payload = {"version": _FORMAT_VERSION, "images": records}
    path.write_text(json.dumps(payload, indent=1))


def read_annotations(path: Path) -> list[ImageAnnotation]:
    """Read records written by `write_annotations`."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AnnotationError(
            f"{path}: cannot read the canonical annotation file ({exc}); rerun the fetch stage"
        ) from exc
    if payload.get("version") not in _READABLE_VERSIONS:
        raise AnnotationError(
            f"{path}: format version {payload.get('version')!r}, expected one of "
            f"{list(_READABLE_VERSIONS)}; rerun the fetch stage"
        )
    return [
        ImageAnnotation(
            filename=image["filename"],
            origin=image["origin"],
            split=image.get("split", ""),
            regions=tuple(
                Region(
                    label=region["label"],
                    shape=region["shape"],
                    points=tuple(tuple(point) for point in region["points"]),
                    geometry=region["geometry"],
                    origin=region["origin"],
                    z=region.get("z"),
                )
                for region in image["regions"]
            ),
        )
        for image in payload["images"]
    ]
