"""Painting canonical regions into a class-index mask, by one of two pixel rules.

* ``opencv`` (VIA, COCO): polygons, circles and ellipses are filled by OpenCV with 4
  fractional bits, so float vertices are not truncated; boundary pixels are inside. A
  rect covers x .. x + width - 1 (VIA's reading of width).
* ``pil``: PIL's ImageDraw, the rule of the converters that Cityscapes
  (json2labelImg) and LabelMe (labelme2voc) ship, so their masks come out pixel for
  pixel: polygons with ``ImageDraw.polygon``, rects from corner to corner inclusive,
  circles as ``ImageDraw.ellipse`` of their bounding box. Rotated ellipses and masks,
  which PIL cannot draw, use the OpenCV / pycocotools path in both rules.

Polylines and points have no area: drawn only with a width (radius) above 0, as lines
of that width (discs of that radius). With ``fill_outlines`` a polyline that traces an
outline is filled as a polygon instead (`is_outline`: closed, or its ends within
max(3 px, 5% of its length) of each other). With ``order: area`` regions are painted
largest first (ties in file order), so a small shape inside a larger one stays visible;
an explicit layer (`Region.z`, CVAT's ``z_order``) wins over area: lower z first.
Lines are PIL's in both rules: OpenCV's thick lines come out up to 2 pixels wider than
asked (thickness 3 paints 5 rows). A ``mask`` region's RLE is decoded with pycocotools.
Otherwise regions are painted in order, so later ones cover earlier ones; `hidden_regions`
finds those wholly covered by other classes (their class on none of their pixels), which
rasterize reports per class. The inverse, a mask traced back into polygons, is
`segflow.data.trace`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as coco_mask

from segflow.data.records import FILLABLE_SHAPES, ImageAnnotation, Region
from segflow.errors import AnnotationError

__all__ = [
    "DrawRules",
    "is_outline",
    "as_drawn",
    "region_area",
    "drawable",
    "paint_region",
    "paint_order",
    "rasterize_image",
    "hidden_regions",
]

#: Label of regions painted with the ignore index (see classes.label_map).
_IGNORE = "ignore"
# OpenCV draws with integer vertices; `shift` fractional bits keep sub-pixel
# coordinates (VIA and COCO write floats) instead of truncating them.
_SHIFT = 4
_SCALE = 1 << _SHIFT
# Shapes the pil rule draws with ImageDraw; the others always take the OpenCV path.
_PIL_SHAPES = ("polygon", "rect", "circle", "polyline", "point")
# An open polyline traces an outline when its ends are at most this far apart: a few
# pixels (the last click lands beside the first), or a share of its length (a large
# outline drawn zoomed out ends further off: 40 px on a 4,700 px head outline in the
# via-heads-balloon set, whose largest share is 1.9%). A line object (a crack, a lane)
# has its ends about its whole length apart.
_OUTLINE_GAP_PX = 3.0
_OUTLINE_GAP_SHARE = 0.05


@dataclass(frozen=True)
class DrawRules:
    """How regions become pixels (see `segflow.config.RasterizeParams`)."""

    fill: str = "opencv"
    polyline_width: int = 0
    point_radius: int = 0
    fill_outlines: bool = True
    order: str = "file"


def is_outline(region: Region) -> bool:
    """Whether `region` is a polyline that traces an outline (see `_OUTLINE_GAP_PX`)."""
    points = region.points
    if region.shape != "polyline" or len(set(points)) < 3:
        return False
    length = sum(math.dist(a, b) for a, b in zip(points, points[1:]))
    return math.dist(points[0], points[-1]) <= max(_OUTLINE_GAP_PX, _OUTLINE_GAP_SHARE * length)


def as_drawn(region: Region, rules: DrawRules) -> Region:
    """`region` as `rules` paint it: with ``fill_outlines``, an outline polyline becomes a polygon."""
    if not (rules.fill_outlines and is_outline(region)):
        return region
    points = region.points[:-1] if region.points[-1] == region.points[0] else region.points
    return replace(region, shape="polygon", points=points)


def region_area(region: Region) -> float:
    """Area in pixels of a fillable shape (0 for polylines and points), for ``order: area``."""
    g = region.geometry
    if region.shape == "polygon":
        xs, ys = np.asarray(region.points, dtype=np.float64).T
        return float(abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))) / 2)  # shoelace
    if region.shape == "rect":
        return g["width"] * g["height"]
    if region.shape == "circle":
        return math.pi * g["r"] ** 2
    if region.shape == "ellipse":
        return math.pi * g["rx"] * g["ry"]
    if region.shape == "mask":
        return float(coco_mask.area({"size": list(g["size"]), "counts": g["counts"].encode("ascii")}))
    return 0.0


def drawable(region: Region, rules: DrawRules) -> bool:
    """Whether `rules` paint anything for `region` (polylines and points need a width)."""
    region = as_drawn(region, rules)
    if region.shape == "polyline":
        return rules.polyline_width > 0
    if region.shape == "point":
        return rules.point_radius > 0
    return region.shape in FILLABLE_SHAPES


def _fixed(values: object) -> np.ndarray:
    return np.round(np.asarray(values, dtype=np.float64) * _SCALE).astype(np.int32)


def paint_region(mask: np.ndarray, region: Region, value: int, rules: DrawRules = DrawRules()) -> None:
    """Paint `region` with `value` into `mask` (H, W) uint8, in place, by the OpenCV rule."""
    region = as_drawn(region, rules)
    g, value = region.geometry, int(value)
    if region.shape == "polygon":
        cv2.fillPoly(mask, [_fixed(region.points)], value, lineType=cv2.LINE_8, shift=_SHIFT)
    elif region.shape == "rect":
        x0, y0 = round(g["x"]), round(g["y"])
        x1, y1 = round(g["x"] + g["width"]) - 1, round(g["y"] + g["height"]) - 1
        cv2.rectangle(mask, (x0, y0), (x1, y1), value, thickness=cv2.FILLED)
    elif region.shape == "circle":
        centre = tuple(_fixed((g["cx"], g["cy"])).tolist())
        cv2.circle(mask, centre, int(_fixed(g["r"])), value, cv2.FILLED, cv2.LINE_8, _SHIFT)
    elif region.shape == "ellipse":
        centre = tuple(_fixed((g["cx"], g["cy"])).tolist())
        axes = tuple(_fixed((g["rx"], g["ry"])).tolist())
        angle = math.degrees(g.get("theta", 0.0))
        cv2.ellipse(mask, centre, axes, angle, 0, 360, value, cv2.FILLED, cv2.LINE_8, _SHIFT)
    elif region.shape == "mask":
        rle = {"size": list(g["size"]), "counts": g["counts"].encode("ascii")}
        mask[coco_mask.decode(rle) > 0] = value
    elif region.shape == "polyline" and rules.polyline_width > 0:
        canvas = Image.fromarray(mask)
        _paint_pil(ImageDraw.Draw(canvas), region, value, rules)
        mask[...] = np.asarray(canvas)
    elif region.shape == "point" and rules.point_radius > 0:
        centre = tuple(_fixed(region.points[0]).tolist())
        cv2.circle(mask, centre, rules.point_radius * _SCALE, value, cv2.FILLED, cv2.LINE_8, _SHIFT)
    else:
        raise AnnotationError(
            f"{region.origin}: a {region.shape} has no area to fill; set "
            "rasterize.polyline_width (or point_radius) to draw it"
        )


def _paint_pil(draw: ImageDraw.ImageDraw, region: Region, value: int, rules: DrawRules) -> None:
    """Paint `region` with `value` by the PIL rule (json2labelImg, labelme2voc)."""
    g = region.geometry
    if region.shape == "polygon":
        draw.polygon(list(region.points), fill=value)  # as json2labelImg: fill, no outline
    elif region.shape == "rect":
        draw.rectangle([g["x"], g["y"], g["x"] + g["width"], g["y"] + g["height"]], fill=value)
    elif region.shape == "circle":
        r = g["r"]
        draw.ellipse([g["cx"] - r, g["cy"] - r, g["cx"] + r, g["cy"] + r], fill=value)
    elif region.shape == "polyline":
        draw.line(list(region.points), fill=value, width=rules.polyline_width)
    else:  # a point
        (x, y), r = region.points[0], rules.point_radius
        draw.ellipse([x - r, y - r, x + r, y + r], fill=value)


class _Canvas:
    """The mask as a numpy array or, while PIL paints, a PIL image (converted lazily).

    It starts as neither: a mask of one value is made directly in the form the first
    region needs, saving a conversion (which costs as much as drawing a Cityscapes frame).
    `wide`: int32 (PIL mode "I") instead of uint8, for one value per region.
    """

    def __init__(self, height: int, width: int, value: int, wide: bool = False) -> None:
        self.size, self.value = (height, width), value
        self.mode, self.dtype = ("I", np.int32) if wide else ("L", np.uint8)
        self.mask: np.ndarray | None = None
        self.image: Image.Image | None = None
        self.draw: ImageDraw.ImageDraw | None = None

    def pil(self) -> ImageDraw.ImageDraw:
        if self.image is None:
            height, width = self.size
            self.image = (
                Image.new(self.mode, (width, height), self.value) if self.mask is None else Image.fromarray(self.mask)
            )  # uint8 (H, W): mode "L"; int32: mode "I"
            self.draw, self.mask = ImageDraw.Draw(self.image), None
        return self.draw

    def array(self) -> np.ndarray:
        if self.image is not None:
            self.mask, self.image, self.draw = np.asarray(self.image).copy(), None, None
        elif self.mask is None:
            self.mask = np.full(self.size, self.value, dtype=self.dtype)
        return self.mask


def paint_order(image: ImageAnnotation, rules: DrawRules = DrawRules()) -> list[Region]:
    """The regions of `image` that `rules` draw (see `drawable`), as drawn, in painting order.

    File order, or with ``rules.order == "area"`` the larger first, within each explicit
    layer (`Region.z`, lowest first; None counts as 0).
    """
    regions = [as_drawn(region, rules) for region in image.regions if drawable(region, rules)]
    if rules.order == "area":
        # Stable: equal (z, area) keep file order. The tool's own z_order outranks area.
        regions.sort(key=lambda region: (region.z or 0, -region_area(region)))
    return regions


def _paint_all(canvas: _Canvas, regions: list[Region], values: list[int], rules: DrawRules) -> np.ndarray:
    for region, value in zip(regions, values, strict=True):
        if region.shape == "polyline" or (rules.fill == "pil" and region.shape in _PIL_SHAPES):
            _paint_pil(canvas.pil(), region, value, rules)
        else:
            paint_region(canvas.array(), region, value, rules)
    return canvas.array()


def rasterize_image(
    image: ImageAnnotation,
    height: int,
    width: int,
    class_names: list[str],
    unlabeled: int,
    *,
    ignore_index: int = 255,
    rules: DrawRules = DrawRules(),
) -> np.ndarray:
    """Paint `image`'s regions into a (height, width) uint8 class-index mask.

    A region's label is a class name (painted with its index) or "ignore" (painted with
    `ignore_index`). Regions `rules` cannot draw (see `drawable`) are left out; the others
    are painted in `paint_order`.
    """
    regions = paint_order(image, rules)
    values = [ignore_index if region.label == _IGNORE else class_names.index(region.label) for region in regions]
    return _paint_all(_Canvas(height, width, unlabeled), regions, values, rules)


def _may_be_covered(regions: list[Region]) -> bool:
    """Whether some region's bounds meet those of a region painted after it (masks: always)."""
    if len(regions) < 2:
        return False
    bounds = [region.bounds() for region in regions]
    if any(b is None for b in bounds):
        return len(regions) > 1
    box = np.asarray(bounds, dtype=np.float64)  # (N, 4): x0, y0, x1, y1
    meet = (box[:, None, 0] <= box[None, :, 2] + 1) & (box[None, :, 0] <= box[:, None, 2] + 1)
    meet &= (box[:, None, 1] <= box[None, :, 3] + 1) & (box[None, :, 1] <= box[:, None, 3] + 1)
    return bool(np.triu(meet, k=1).any())


def hidden_regions(
    image: ImageAnnotation,
    mask: np.ndarray,
    class_names: list[str],
    *,
    ignore_index: int = 255,
    rules: DrawRules = DrawRules(),
) -> list[Region]:
    """The regions of `image` whose class shows on none of their pixels in `mask` (H, W), the
    image's `rasterize_image` output: wholly covered by other classes painted after them.

    A region under a copy of itself (or other regions of its class) loses nothing and is
    not hidden; nor is a sliver that paints no pixel even alone. In painting order.
    """
    regions = paint_order(image, rules)
    if not _may_be_covered(regions):
        return []
    # Each region paints its number (1..N) into one int32 canvas: only a number left
    # nowhere can be a hidden region.
    height, width = mask.shape
    owners = _paint_all(_Canvas(height, width, 0, wide=True), regions, list(range(1, len(regions) + 1)), rules)
    seen = np.bincount(owners.ravel(), minlength=len(regions) + 1) > 0
    hidden = []
    for number, region in enumerate(regions, start=1):
        if seen[number]:
            continue
        value = ignore_index if region.label == _IGNORE else class_names.index(region.label)
        alone = _paint_all(_Canvas(height, width, 0), [region], [1], rules) > 0
        if alone.any() and not (mask[alone] == value).any():
            hidden.append(region)
    return hidden
