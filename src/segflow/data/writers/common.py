"""What every annotation writer shares: the image to export, and how a coordinate is written."""

from __future__ import annotations

from dataclasses import dataclass

from segflow.data.records import ImageAnnotation

__all__ = ["ExportImage", "number", "flat_points"]


@dataclass(frozen=True)
class ExportImage:
    """One image to export: its record (file name relative to the images folder, polygon
    regions in paint order), its size in pixels, and its file's size in bytes (VIA keys an
    image by name and byte size)."""

    record: ImageAnnotation
    height: int
    width: int
    file_size: int


def number(value: float) -> float | int:
    """A coordinate as written: whole numbers as integers, others to 1/100 pixel."""
    return int(value) if float(value).is_integer() else round(float(value), 2)


def flat_points(points: tuple[tuple[float, float], ...]) -> list[float | int]:
    """[x0, y0, x1, y1, ...]: COCO's polygon layout."""
    return [number(v) for point in points for v in point]
