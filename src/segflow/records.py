"""Canonical annotation records: what every annotation reader produces.

A reader turns one tool's export (VIA CSV, VIA JSON, ...) into a list of
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
=========  ==============================================================
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from segflow.errors import AnnotationError

__all__ = [
    "SHAPES",
    "FILLABLE_SHAPES",
    "Region",
    "ImageAnnotation",
    "write_annotations",
    "read_annotations",
]

#: Every shape a region may have.
SHAPES = ("polygon", "polyline", "point", "rect", "circle", "ellipse")
#: Shapes that enclose an area and so can be painted into a mask.
FILLABLE_SHAPES = ("polygon", "rect", "circle", "ellipse")

_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Region:
    """One annotated region of an image.

    Attributes:
        label: the annotation label as written by the tool (mapped to a class later).
        shape: one of `SHAPES`.
        points: vertices for polygon, polyline and point; empty otherwise.
        geometry: named numbers for rect, circle and ellipse; empty otherwise.
        origin: where the region came from, e.g. ``"via.csv row 7"``, for messages.
    """

    label: str
    shape: str
    points: tuple[tuple[float, float], ...] = ()
    geometry: dict[str, float] = field(default_factory=dict)
    origin: str = ""


@dataclass(frozen=True)
class ImageAnnotation:
    """An image and its regions, in the order the tool stored them.

    Attributes:
        filename: image path relative to the annotation source folder.
        regions: the regions; later ones are painted over earlier ones.
        origin: where the record came from, for messages.
    """

    filename: str
    regions: tuple[Region, ...] = ()
    origin: str = ""


def write_annotations(images: list[ImageAnnotation], path: Path) -> None:
    """Write records to the canonical JSON file at `path`."""
    payload = {"version": _FORMAT_VERSION, "images": [asdict(image) for image in images]}
    path.write_text(json.dumps(payload, indent=1))


def read_annotations(path: Path) -> list[ImageAnnotation]:
    """Read records written by `write_annotations`."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AnnotationError(
            f"{path}: cannot read the canonical annotation file ({exc}); rerun the fetch stage"
        ) from exc
    if payload.get("version") != _FORMAT_VERSION:
        raise AnnotationError(
            f"{path}: format version {payload.get('version')!r}, expected {_FORMAT_VERSION}; "
            "rerun the fetch stage"
        )
    return [
        ImageAnnotation(
            filename=image["filename"],
            origin=image["origin"],
            regions=tuple(
                Region(
                    label=region["label"],
                    shape=region["shape"],
                    points=tuple(tuple(point) for point in region["points"]),
                    geometry=region["geometry"],
                    origin=region["origin"],
                )
                for region in image["regions"]
            ),
        )
        for image in payload["images"]
    ]
