"""The working resolution and training crop, planned from the data (``image_size: auto``).

The working resolution is a *long side* L: every image is resized so that its longer side
is L pixels (`segflow.inference.segment.working_factor`), because photos of one dataset
come at different resolutions of similar scenes (a 96 px thumbnail and a 12 MP photo of
a head): objects keep their size relative to the image, not in pixels. Rules, in order
(the same data and params give the same plan on every machine: nothing is measured from
the machine):

1. *Small objects keep enough pixels.* Each class's objects (connected regions of its
   pixels in the training masks) are measured "across" as area / longer bounding-box side,
   the mean thickness (the width of a river; about 0.8x the diameter of a disc), relative
   to their image's long side. Fragments under half a ``min_object_px`` square in area
   (slivers of road between two cars, a stray edge pixel) are counted, not measured. L is
   at least what keeps the 5th-percentile object ``min_object_px`` across.
2. *Context.* L is at least `MIN_LONG_SIDE`.
3. *Never enlarged.* L is at most the median image's long side.
4. *The crop holds the objects.* The training crop is a square wide enough for the median
   object of the class with the largest ones (background left out) with `CROP_CONTEXT`
   around it, a multiple of 32 from `MIN_CROP` to L (rounded up to 32) and ``max_crop``.
   The number of images plays no part: an epoch is ``train.steps_per_epoch`` batches of
   crops drawn with replacement (`segflow.training.dataset`), so a large dataset costs no
   more per epoch and gets the same crops as a small one.
5. *Inference tiles* are squares of side L (multiple of 32, at least the crop, at most
   `MAX_TILE`), so most photos run whole and larger working sizes in overlapping tiles.

A fixed ``image_size`` (a number or [height, width]) sets crop and tile to that size and L
to its longer side: today's letterbox, without the padding.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import cv2
import numpy as np

from segflow.prepared import ClassObjects, Plan, PlanRules

__all__ = ["MIN_LONG_SIDE", "CROP_CONTEXT", "MAX_TILE", "MIN_CROP", "object_sizes", "plan_scale"]

#: Rule 2: the working long side never drops below this (pixels), for context.
MIN_LONG_SIDE = 128
#: Rule 4: the crop side over the largest class's median object across: an eighth of the
#: object's width of context on each side (the sample: roads 98 px across -> 128 px crops).
CROP_CONTEXT = 1.25
#: Rule 5: the largest inference tile side (pixels); memory per tile batch stays bounded.
MAX_TILE = 1024
#: Rule 4: the smallest training crop side (pixels): the deepest feature of a stride-32
#: network is then at least 4 x 4.
MIN_CROP = 128


def _floor32(value: float) -> int:
    return max(32, int(value) // 32 * 32)


def _ceil32(value: float) -> int:
    return max(32, math.ceil(value / 32) * 32)


def _sized(found: list[float]) -> list[float]:
    return [s for s in found if not np.isnan(s)]


def _measure(found: list[float]) -> ClassObjects:
    """One class's objects: counted, and the measured ones' 5th percentile and median."""
    sized = _sized(found)
    return ClassObjects(
        objects=len(sized),
        fragments=len(found) - len(sized),
        p5_across_pct=round(100 * float(np.percentile(sized, 5)), 3) if sized else None,
        median_across_pct=round(100 * float(np.median(sized)), 3) if sized else None,
    )


def object_sizes(mask: np.ndarray, num_classes: int, min_area: float = 0.0) -> dict[int, list[float]]:
    """Per class present in `mask` (H, W), the "across" size in pixels of each connected
    object of at least `min_area` pixels (smaller ones: NaN, counted but not measured)."""
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
    max_crop: int,
    background: Iterable[int] = (),
) -> Plan:
    """The plan (see the module docstring).

    Args:
        sizes: (height, width) of every training image, original pixels.
        objects: per class index, its objects' "across" sizes relative to their image's
            long side (NaN: a fragment).
        background: class indices left out of rules 1 and 4 (the unlabeled class, whose
            "objects" are the gaps between the others).
    """
    longs = np.array([max(h, w) for h, w in sizes], float)
    aspect = float(np.median([min(h, w) / max(h, w) for h, w in sizes]))
    long_med = float(np.median(longs))
    skip = set(background)
    across = [s for c, found in objects.items() if c not in skip for s in _sized(found)]
    p5 = float(np.percentile(across, 5)) if across else None
    measured = {
        "mode": "auto" if image_size == "auto" else "fixed",
        "images": len(sizes),
        "median_long_side": round(long_med),
        "median_aspect": round(aspect, 3),
        "object_p5_across_pct": None if p5 is None else round(100 * p5, 3),
        "classes": {class_names[c]: _measure(found) for c, found in sorted(objects.items())},
        "rules": PlanRules(min_object_px=min_object_px, max_crop=max_crop),
    }
    if image_size != "auto":
        crop = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        long_side, tile, limited_by = max(crop), crop, "image_size"
    else:
        long_side, crop, tile, limited_by = _auto_scale(objects, skip, p5, long_med, min_object_px, max_crop)
    return Plan(
        **measured,
        long_side=long_side,
        median_scale=round(long_side / long_med, 4),
        crop=crop,
        tile=tile,
        limited_by=limited_by,
    )


def _auto_scale(
    objects: dict[int, list[float]],
    skip: set[int],
    p5: float | None,
    long_med: float,
    min_object_px: float,
    max_crop: int,
) -> tuple[int, tuple[int, int], tuple[int, int], str]:
    """Rules 1-5 of the module docstring: (long side, crop, tile, the rule that set the long side)."""
    small = 0.0 if p5 is None else min_object_px / p5
    wanted = max(small, MIN_LONG_SIDE)
    long_side = int(round(min(long_med, wanted)))
    limited_by = "median image" if wanted >= long_med else "small objects" if small >= MIN_LONG_SIDE else "context"
    medians = [float(np.median(s)) for c, found in objects.items() if c not in skip for s in [_sized(found)] if s]
    held = CROP_CONTEXT * max(medians) * long_side if medians else long_side  # no objects: the whole image
    side = min(_ceil32(long_side), _floor32(max_crop), max(MIN_CROP, _ceil32(held)))
    tile = min(MAX_TILE, max(side, _ceil32(long_side)))
    return long_side, (side, side), (tile, tile), limited_by
