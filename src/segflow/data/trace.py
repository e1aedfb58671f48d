"""A class-index mask traced back into polygons: the inverse of `segflow.data.draw`.

`polygons` traces each class's connected regions with OpenCV (`cv2.findContours`, outer
boundaries) and returns them as canonical region records (`segflow.data.records.Region`:
label, shape "polygon", points [[x, y], ...] in pixels of the image), the form every
annotation reader produces, so a predicted mask can be reviewed and corrected in the same
tools (`segflow predict`'s pre-annotations, the service's ``?polygons=true``, Label Studio).
Regions come largest first: painting them in order (as rasterize does, later over earlier)
puts a region inside a hole of another over it, which rebuilds the mask up to the traced
boundaries.
"""

from __future__ import annotations

from dataclasses import asdict

import cv2
import numpy as np

from segflow.data.records import Region

__all__ = ["polygons"]


def polygons(
    mask: np.ndarray,
    class_names: list[str],
    simplify: float = 1.0,
    min_area: int = 0,
    background: int | None = None,
) -> list[dict]:
    """Each class's regions of `mask` (H, W) as canonical polygon records, largest first.

    Several parts of a class are several regions. A hole in a region (pixels of another
    class it surrounds) is traced as a region of its own, smaller, so painting the regions
    in order puts it back over the region that fills it.

    Args:
        simplify: Douglas-Peucker tolerance in pixels (`cv2.approxPolyDP`); 0 keeps every
            boundary vertex. Regions left with fewer than 3 vertices (a pixel, a line) are
            dropped: they have no area.
        min_area: parts of fewer pixels are dropped; painted in order, their pixels take
            the class of the region around them.
        background: the class of unannotated pixels (``rasterize.unlabeled``), traced only
            where it forms holes in other regions (parts not touching the image border);
            None traces it like the others.
    """
    found: list[tuple[float, dict]] = []
    height, width = mask.shape
    for index, name in enumerate(class_names):
        binary = (mask == index).astype(np.uint8)
        if not binary.any():
            continue
        if min_area > 0 or index == background:
            # 8-connected parts, as findContours traces them.
            count, parts, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
            left, top, w, h, area = (stats[:, i] for i in range(5))
            keep = area >= min_area
            if index == background:
                keep &= (left > 0) & (top > 0) & (left + w < width) & (top + h < height)
            keep[0] = False  # label 0: the pixels of other classes
            binary = keep[parts].astype(np.uint8)
            if not binary.any():
                continue
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for contour in contours:
            if simplify > 0:
                contour = cv2.approxPolyDP(contour, simplify, True)
            if len(contour) < 3:
                continue
            points = tuple((int(x), int(y)) for x, y in contour[:, 0])
            region = Region(label=name, shape="polygon", points=points, origin=f"predicted {name}")
            found.append((cv2.contourArea(contour), asdict(region)))
    found.sort(key=lambda item: -item[0])
    return [record for _, record in found]
