"""Read a COCO instances JSON (``images``, ``annotations``, ``categories``) into records.

* Polygons (``segmentation`` a list of flat ``[x0, y0, x1, y1, ...]`` rings): one
  polygon region per ring, so an object in several parts paints their union.
* RLE (``segmentation`` an object with ``counts`` and ``size``), compressed (a string)
  or uncompressed (a list of run lengths, as CVAT writes): one ``mask`` region holding
  the compressed RLE, converted and checked with pycocotools.
* No segmentation but a ``bbox`` (CVAT's rectangles): a ``rect`` region.
* ``iscrowd: 1``: painted as its category, or as the ignore index with ``crowd="ignore"``
  (``fetch.coco_crowd``): crowd regions hold many objects and COCO scores none of them.

The label is the category's ``name``. Images are listed in the file's order, each with
its annotations in the file's order (later ones paint over earlier ones). Every
region's origin names the annotation id. The categories a file declares, also those no
annotation uses, are read by `read_coco_categories` (``classes.names: auto`` reports them).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, get_args

from pycocotools import mask as coco_mask

from segflow.config.data import CrowdRule
from segflow.data.drops import Drops
from segflow.data.readers.base import Reader, ReadOptions, Source
from segflow.data.readers.common import declared_side, load_json, number
from segflow.data.records import ImageAnnotation, Region
from segflow.errors import AnnotationError

__all__ = ["CROWD_CHOICES", "READER", "read_coco", "read_coco_categories", "parse_coco"]

log = logging.getLogger(__name__)

#: What crowd annotations (``iscrowd: 1``) become: their category, or the ignore label.
CROWD_CHOICES = get_args(CrowdRule)
_FIX = "fix the annotation or export the dataset again"


def _rle(segmentation: dict[str, Any], height: int, width: int, where: str) -> dict[str, Any]:
    """The compressed RLE of a COCO RLE segmentation, checked against the image size."""
    size, counts = segmentation.get("size"), segmentation.get("counts")
    if size != [height, width]:
        raise AnnotationError(
            f"{where}: RLE size {size} is not the image's [height, width] [{height}, {width}] "
            f"given in 'images'; {_FIX} (was it resized?)",
            reason="RLE size mismatch",
        )
    if isinstance(counts, list):
        if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
            raise AnnotationError(
                f"{where}: uncompressed RLE counts must be whole numbers summing to "
                f"height * width = {height * width}; {_FIX}",
                reason="bad geometry",
            )
        rle = coco_mask.frPyObjects(segmentation, height, width)
    elif isinstance(counts, str):
        rle = {"size": size, "counts": counts.encode("ascii")}
    else:
        raise AnnotationError(
            f"{where}: RLE counts is {type(counts).__name__}, expected a string or a list; {_FIX}",
            reason="bad geometry",
        )
    try:
        coco_mask.decode(rle)  # pycocotools checks the runs cover the image exactly
    except ValueError as exc:
        raise AnnotationError(f"{where}: RLE does not decode ({exc}); {_FIX}", reason="bad geometry") from exc
    return {"counts": rle["counts"].decode("ascii"), "size": [height, width]}


def _regions(annotation: dict[str, Any], label: str, height: int, width: int, where: str, origin: str) -> list[Region]:
    """The regions of one annotation: one per polygon ring, one mask, or one rect."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):
        geometry = _rle(segmentation, height, width, where)
        return [Region(label=label, shape="mask", geometry=geometry, origin=origin)]
    if segmentation:
        if not isinstance(segmentation, list):
            raise AnnotationError(
                f"{where}: segmentation is {type(segmentation).__name__}, expected a list of "
                f"polygons or an RLE object; {_FIX}",
                reason="bad geometry",
            )
        regions = []
        for ring_number, ring in enumerate(segmentation):
            key = f"segmentation[{ring_number}]"
            if not isinstance(ring, list) or len(ring) < 6 or len(ring) % 2:
                raise AnnotationError(
                    f"{where}: {key} is not a flat list of at least 3 x, y pairs; {_FIX}",
                    reason="bad geometry",
                )
            values = [number(v, f"{key}[{i}]", where, _FIX) for i, v in enumerate(ring)]
            points = tuple(zip(values[0::2], values[1::2]))
            if points[-1] == points[0]:  # records close polygons implicitly
                points = points[:-1]
            regions.append(Region(label=label, shape="polygon", points=points, origin=f"{origin} ring {ring_number}"))
        return regions
    bbox = annotation.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise AnnotationError(f"{where}: neither a segmentation nor a bbox; {_FIX}", reason="bad geometry")
    x, y, w, h = (number(v, f"bbox[{i}]", where, _FIX) for i, v in enumerate(bbox))
    geometry = {"x": x, "y": y, "width": w, "height": h}
    return [Region(label=label, shape="rect", geometry=geometry, origin=origin)]


def _table(data: dict[str, Any], key: str, path: Path) -> list[dict[str, Any]]:
    """``data[key]``: a list of objects, or an error naming the key."""
    rows = data.get(key)
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise AnnotationError(
            f"{path}: {key!r} is not a list of objects; is this a COCO instances file? "
            "Export the dataset again as COCO, or set fetch.format",
            reason="unreadable file",
        )
    return rows


def read_coco_categories(path: Path) -> list[str]:
    """The category names the COCO file declares, in its order (also those no annotation uses)."""
    data = load_json(path, "your COCO exporter")
    if not isinstance(data, dict):
        return []
    return [str(c.get("name", "")) for c in _table(data, "categories", path) if str(c.get("name", "")).strip()]


def read_coco(
    path: Path, label_key: str = "", drops: Drops | None = None, crowd: str = "class"
) -> list[ImageAnnotation]:
    """Read a COCO instances JSON; `label_key` is unused (labels are category names).

    Args:
        path: the JSON file.
        drops: where bad annotations go; None (or a strict one) raises at the first.
        crowd: one of `CROWD_CHOICES`.
    """
    return parse_coco(path, load_json(path, "your COCO exporter"), label_key, drops, crowd)


def parse_coco(
    path: Path, data: Any, label_key: str = "", drops: Drops | None = None, crowd: str = "class"
) -> list[ImageAnnotation]:
    """`read_coco` on JSON already parsed from `path`."""
    drops = drops or Drops()
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a COCO JSON object, found {type(data).__name__}")
    categories = {c.get("id"): str(c.get("name", "")) for c in _table(data, "categories", path)}
    images: dict[Any, tuple[dict[str, Any], list[Region]]] = {}
    for image in _table(data, "images", path):
        if not isinstance(image.get("file_name"), str) or image.get("id") in images:
            raise AnnotationError(
                f"{path} image id {image.get('id')!r}: no file_name, or the id is repeated; "
                "each entry of 'images' needs a unique id and a file_name",
                reason="unreadable file",
            )
        images[image["id"]] = (image, [])
    boxes_only = 0
    for annotation in _table(data, "annotations", path):
        where = f"{path} annotation id {annotation.get('id')!r}"
        try:
            if annotation.get("image_id") not in images:
                raise AnnotationError(
                    f"{where}: image_id {annotation.get('image_id')!r} is not in 'images'; {_FIX}",
                    reason="missing image",
                )
            image, regions = images[annotation["image_id"]]
            where += f" (image {image['file_name']})"
            label = categories.get(annotation.get("category_id"))
            if not label:
                raise AnnotationError(
                    f"{where}: category_id {annotation.get('category_id')!r} is not in "
                    f"'categories' (ids {sorted(categories, key=str)}); {_FIX}",
                    reason="unknown category",
                )
            if annotation.get("iscrowd") and crowd == "ignore":
                label = "ignore"
            origin = f"{path.name} annotation id {annotation.get('id')}"
            height, width = declared_side(image.get("height")), declared_side(image.get("width"))
            regions.extend(_regions(annotation, label, height, width, where, origin))
            boxes_only += not annotation.get("segmentation")
        except AnnotationError as exc:
            drops.bad(exc)
    if boxes_only:
        log.warning("%s: %d annotations have only a bbox; they are painted as rectangles", path, boxes_only)
    return [
        ImageAnnotation(
            filename=image["file_name"],
            regions=tuple(regions),
            origin=f"{path.name} image id {image_id} ({image['file_name']})",
        )
        for image_id, (image, regions) in images.items()
    ]


def _is_coco(source: Source) -> bool:
    data = source.sniff_json()
    return isinstance(data, dict) and {"images", "annotations", "categories"} <= data.keys()


def _read(source: Source, options: ReadOptions) -> list[ImageAnnotation]:
    return parse_coco(source.path, source.json(), options.label_key, options.drops, options.crowd)


READER = Reader(name="coco", detect=_is_coco, read=_read, labels=read_coco_categories)
