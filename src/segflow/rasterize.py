"""The rasterize stage: canonical regions -> single-channel class-index PNG masks.

Rules (documented in the README too):

* Regions are painted in the order the annotation file lists them, so a later region
  covers an earlier one where they overlap (as they appear stacked in VIA).
* Pixels that no region covers get `Params.unlabeled_value`: a class (usually
  background) or the ignore index, chosen by ``rasterize.unlabeled``.
* A region's pixels are those OpenCV fills: polygon and rect boundaries are inside;
  parts outside the image are clipped.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from segflow.config import Params
from segflow.errors import AnnotationError
from segflow.outputs import atomic_dir
from segflow.records import ImageAnnotation, Region, read_annotations

__all__ = ["mask_name", "paint_region", "rasterize_image", "rasterize"]

log = logging.getLogger(__name__)

# OpenCV draws with integer vertices; `shift` fractional bits keep sub-pixel
# coordinates (VIA and COCO write floats) instead of truncating them.
_SHIFT = 4
_SCALE = 1 << _SHIFT


def _fixed(value: float) -> int:
    return int(round(value * _SCALE))


def mask_name(filename: str) -> str:
    """Mask file name (relative) for an image file name: same path, ``.png``."""
    return str(Path(filename).with_suffix(".png"))


def paint_region(mask: np.ndarray, region: Region, value: int) -> None:
    """Fill `region` with `value` in `mask` (H, W) uint8, in place."""
    g = region.geometry
    if region.shape == "polygon":
        points = np.array([[_fixed(x), _fixed(y)] for x, y in region.points], dtype=np.int32)
        cv2.fillPoly(mask, [points], int(value), lineType=cv2.LINE_8, shift=_SHIFT)
    elif region.shape == "rect":
        # VIA's rect covers x .. x+width; OpenCV's corners are inclusive pixels.
        x0, y0 = round(g["x"]), round(g["y"])
        x1, y1 = round(g["x"] + g["width"]) - 1, round(g["y"] + g["height"]) - 1
        cv2.rectangle(mask, (x0, y0), (x1, y1), int(value), thickness=cv2.FILLED)
    elif region.shape == "circle":
        centre = (_fixed(g["cx"]), _fixed(g["cy"]))
        cv2.circle(mask, centre, _fixed(g["r"]), int(value), cv2.FILLED, cv2.LINE_8, _SHIFT)
    elif region.shape == "ellipse":
        centre = (_fixed(g["cx"]), _fixed(g["cy"]))
        axes = (_fixed(g["rx"]), _fixed(g["ry"]))
        angle = math.degrees(g.get("theta", 0.0))
        cv2.ellipse(mask, centre, axes, angle, 0, 360, int(value), cv2.FILLED, cv2.LINE_8, _SHIFT)
    else:
        raise AnnotationError(
            f"{region.origin}: shape {region.shape!r} has no area to fill; only polygon, rect, "
            "circle and ellipse can be rasterized"
        )


def rasterize_image(
    image: ImageAnnotation, height: int, width: int, class_names: list[str], unlabeled: int
) -> np.ndarray:
    """Paint `image`'s regions into a (height, width) uint8 class-index mask."""
    mask = np.full((height, width), unlabeled, dtype=np.uint8)
    for region in image.regions:
        paint_region(mask, region, class_names.index(region.label))
    return mask


def rasterize(params: Params, fetch_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write one mask PNG per image of the fetch snapshot into `out_dir`.

    Returns:
        Pixel count per class (and ``"ignore"``) over all masks.
    """
    images = read_annotations(fetch_dir / "annotations.json")
    # The fetch manifest already holds every image's size: no need to decode them again.
    manifest = json.loads((fetch_dir / "manifest.json").read_text())
    sizes = {entry["filename"]: (entry["height"], entry["width"]) for entry in manifest["files"]}
    names = params.classes.names
    counts = np.zeros(256, dtype=np.int64)
    with atomic_dir(out_dir) as staging:
        for image in tqdm(images, desc="rasterize", unit="img"):
            height, width = sizes[image.filename]
            mask = rasterize_image(image, height, width, names, params.unlabeled_value)
            target = staging / mask_name(image.filename)
            if target.exists():
                raise AnnotationError(
                    f"{image.origin}: two images share the mask name {target.name}; rename one "
                    "(masks are named after the image without its extension)"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), mask)
            counts += np.bincount(mask.ravel(), minlength=256)
    pixels = {name: int(counts[index]) for index, name in enumerate(names)}
    pixels["ignore"] = int(counts[params.classes.ignore_index])
    return pixels
