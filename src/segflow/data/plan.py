"""The working scale and training crop, planned from the data (``preprocess.image_size: auto``).

Rules, in order (the same data and params give the same plan on every machine: nothing
is measured from the machine):

1. *Small objects keep enough pixels.* Each class's objects (connected regions of its
   pixels in the training masks) are measured "across" as area / longer bounding-box side,
   the mean thickness, which is the width of a river and about 0.8x the diameter of a disc.
   Fragments smaller than half a ``min_object_px`` square in area (the slivers of road
   left between two cars, a stray pixel along a polygon's edge) are counted but not
   measured: they would pin every plan to scale 1. The scale is the largest shrink that
   keeps the 5th-percentile object at least ``min_object_px`` across, and never above 1:
   photos are not enlarged.
2. *Enough context.* The scaled median image keeps at least `MIN_SHORT_SIDE` pixels on its
   short side (or its own size, if smaller).
3. *An epoch fits the budget.* A training crop is a square of the scaled median image's
   longer side (a multiple of 32, at most ``max_crop``), shrunk while one crop per training
   image would exceed ``pixels_per_epoch``; when the budget allows several crops of that
   size per image, an epoch takes them (``crops_per_image``), up to covering the image twice.
4. *Inference tiles* are the scaled median image (multiple of 32, at least the crop, at most
   `MAX_TILE`), so most photos run whole and larger ones in overlapping tiles.

A fixed ``image_size`` (a number or [height, width]) overrides rules 1-4: crop and tile are
that size and the scale fits the median image into it (today's letterbox, for same-sized
photos).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np

__all__ = ["MIN_SHORT_SIDE", "MAX_TILE", "MIN_CROP", "object_sizes", "plan_scale"]

#: Rule 2: the scaled median image's short side never drops below this (pixels).
MIN_SHORT_SIDE = 96
#: Rule 4: the largest inference tile side (pixels); memory per tile batch stays bounded.
MAX_TILE = 1024
#: Rule 3: the smallest training crop side (pixels).
MIN_CROP = 64


def _floor32(value: float) -> int:
    return max(32, int(value) // 32 * 32)


def _ceil32(value: float) -> int:
    return max(32, math.ceil(value / 32) * 32)


def object_sizes(mask: np.ndarray, num_classes: int, min_area: float = 0.0) -> dict[int, list[float]]:
    """Per class present in `mask` (H, W), the "across" size of each connected object of at
    least `min_area` pixels (smaller ones: NaN, so they are counted but not measured)."""
    sizes: dict[int, list[float]] = {}
    for value in np.unique(mask):
        if value >= num_classes:
            continue  # ignore index
        _, _, stats, _ = cv2.connectedComponentsWithStats((mask == value).astype(np.uint8), connectivity=8)
        longer = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])
        area = stats[1:, cv2.CC_STAT_AREA]
        sizes[int(value)] = np.where(area >= min_area, area / longer, np.nan).astype(float).tolist()
    return sizes


def plan_scale(
    sizes: list[tuple[int, int]],
    objects: dict[int, list[float]],
    class_names: list[str],
    image_size: str | int | tuple[int, int],
    min_object_px: float,
    pixels_per_epoch: int,
    max_crop: int,
    background: Iterable[int] = (),
) -> dict:
    """The plan (see the module docstring) as a JSON-ready dict.

    Args:
        sizes: (height, width) of every training image, original pixels.
        objects: per class index, the "across" sizes of its objects in the training masks.
        background: class indices left out of rule 1 (the unlabeled class, e.g. background,
            whose "objects" are the gaps between the others).
    """
    heights, widths = np.array([h for h, _ in sizes]), np.array([w for _, w in sizes])
    median_h, median_w = float(np.median(heights)), float(np.median(widths))
    skip = set(background)
    measured = {
        class_names[c]: {
            "objects": len(v),
            "p5_across": round(float(np.percentile(v, 5)), 2),
            "median_across": round(float(np.median(v)), 2),
        }
        for c, v in sorted(objects.items())
        if v
    }
    across = [s for c, v in objects.items() if c not in skip for s in v]
    p5 = float(np.percentile(across, 5)) if across else None
    plan: dict = {
        "mode": "auto" if image_size == "auto" else "fixed",
        "images": len(sizes),
        "median_size": [round(median_h), round(median_w)],
        "object_p5_across": None if p5 is None else round(p5, 2),
        "classes": measured,
        "rules": {"min_object_px": min_object_px, "pixels_per_epoch": pixels_per_epoch, "max_crop": max_crop},
    }
    if image_size != "auto":
        crop = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        scale = min(1.0, crop[0] / median_h, crop[1] / median_w)
        return {**plan, "scale": round(scale, 4), "crop": list(crop), "tile": list(crop), "crops_per_image": 1}
    scale = 1.0 if p5 is None else min(1.0, min_object_px / p5)
    short = min(median_h, median_w)
    scale = max(scale, min(1.0, MIN_SHORT_SIDE / short))
    scaled_h, scaled_w = median_h * scale, median_w * scale
    side = min(_ceil32(max(scaled_h, scaled_w)), _floor32(max_crop))
    count = max(1, len(sizes))
    if count * side * side > pixels_per_epoch:
        side = max(MIN_CROP, _floor32(math.sqrt(pixels_per_epoch / count)))
    cover = math.ceil(2 * scaled_h * scaled_w / (side * side))
    crops = int(max(1, min(cover, pixels_per_epoch // (count * side * side))))
    tile = [min(MAX_TILE, max(side, _ceil32(scaled_h))), min(MAX_TILE, max(side, _ceil32(scaled_w)))]
    return {**plan, "scale": round(scale, 4), "crop": [side, side], "tile": tile, "crops_per_image": crops}
