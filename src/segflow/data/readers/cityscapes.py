"""Read Cityscapes ``*_gtFine_polygons.json`` files into canonical records.

The dataset folder has Cityscapes' layout::

    gtFine/<split>/<city>/<frame>_gtFine_polygons.json
    leftImg8bit/<split>/<city>/<frame>_leftImg8bit.png

Each polygons file is one image; its objects become polygon regions in file order, as
json2labelImg paints them. Labels follow the official table (`segflow.cityscapes_labels`):
``<label>group`` is ``<label>`` when only that is known, objects marked ``deleted`` and
labels with a negative id (``license plate``) are not drawn (and counted as dropped).
Polygons are kept exactly as written, even with fewer than 3 vertices, so that the
``pil`` rasterizer reproduces json2labelImg pixel for pixel. The ``<split>`` folder
(train, val, test) becomes the record's split.
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from cityscapesscripts.helpers.labels import name2label

from segflow.cityscapes_labels import official_label
from segflow.data.drops import Drops
from segflow.data.readers.base import Reader, ReadOptions, Source
from segflow.data.readers.common import load_json, points_from_pairs
from segflow.data.records import SPLITS, ImageAnnotation, Region
from segflow.errors import AnnotationError

__all__ = ["POLYGONS_SUFFIX", "IMAGE_SUFFIX", "READER", "read_cityscapes", "parse_cityscapes"]

#: File name endings of the annotation and of its image.
POLYGONS_SUFFIX = "_gtFine_polygons.json"
IMAGE_SUFFIX = "_leftImg8bit.png"
_FIX = "fix the object in the JSON file or delete it"


def _image_name(path: Path, from_root: bool) -> tuple[str, str]:
    """(image file name, split) for the polygons file at `path`.

    The name is relative to the dataset root when `from_root`, else to `path`'s folder.
    """
    frame = path.name.removesuffix(POLYGONS_SUFFIX)
    city, split_dir = path.parent, path.parent.parent
    if split_dir.parent.name != "gtFine":  # a file on its own: the image beside it
        return f"{frame}{IMAGE_SUFFIX}", ""
    image = f"leftImg8bit/{split_dir.name}/{city.name}/{frame}{IMAGE_SUFFIX}"
    split = split_dir.name if split_dir.name in SPLITS else ""
    return (image if from_root else f"../../../{image}"), split


def parse_cityscapes(path: Path, data: Any, drops: Drops | None = None, prefix: str = "") -> ImageAnnotation:
    """One polygons file, already parsed from `path`; `prefix` is set when read from a root."""
    drops = drops or Drops()
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
        raise AnnotationError(
            f"{path}: no 'objects' list, so not a Cityscapes polygons file; check the file or set fetch.format",
            reason="unreadable file",
        )
    name = posixpath.join(prefix, path.name) if prefix else path.name
    regions = []
    for number, obj in enumerate(data["objects"]):
        where, origin = f"{path} object {number}", f"{name} object {number}"
        try:
            if not isinstance(obj, dict) or not isinstance(obj.get("label"), str):
                raise AnnotationError(f"{where}: no 'label'; {_FIX}", reason="no label")
            if obj.get("deleted"):
                drops.note("deleted object", f"{where}: marked deleted; not drawn", expected=True)
                continue
            label = official_label(obj["label"])
            if label is None:
                raise AnnotationError(
                    f"{where}: label {obj['label']!r} is not in the Cityscapes label table "
                    "(cityscapesscripts.helpers.labels); fix the label",
                    reason="unknown label",
                )
            if name2label[label].id < 0:
                drops.note("negative Cityscapes id", f"{where}: {label!r} has a negative id; not drawn", expected=True)
                continue
            points = points_from_pairs(obj.get("polygon"), "polygon", where, _FIX)
            if not points:
                raise AnnotationError(f"{where}: the polygon has no points; {_FIX}", reason="bad geometry")
            regions.append(Region(label=label, shape="polygon", points=tuple(points), origin=origin))
        except AnnotationError as exc:
            drops.bad(exc)
    filename, split = _image_name(path, from_root=bool(prefix))
    return ImageAnnotation(filename=filename, regions=tuple(regions), origin=name, split=split)


def read_cityscapes(path: Path, label_key: str = "", drops: Drops | None = None) -> list[ImageAnnotation]:
    """Read a Cityscapes dataset folder (holding ``gtFine/``) or one polygons file.

    Image file names are relative to `path` (a folder) or to `path`'s folder (a file).
    `label_key` is unused.
    """
    drops = drops or Drops()
    if not path.is_dir():
        return [parse_cityscapes(path, load_json(path, "the Cityscapes annotation tool"), drops)]
    files = sorted(path.glob(f"gtFine/*/*/*{POLYGONS_SUFFIX}"))
    if not files:
        raise AnnotationError(
            f"{path}: no gtFine/<split>/<city>/*{POLYGONS_SUFFIX} files; point fetch.annotations "
            "at the folder holding gtFine/ and leftImg8bit/ (label PNGs alone are not read)"
        )
    records = []
    for file in files:
        prefix = file.parent.relative_to(path).as_posix()
        try:
            data = load_json(file, "the Cityscapes annotation tool")
            records.append(parse_cityscapes(file, data, drops, prefix))
        except AnnotationError as exc:
            drops.bad(exc)
    return records


def _is_cityscapes(source: Source) -> bool:
    """A folder holding ``gtFine/``, or a JSON object with ``objects`` and ``imgHeight``."""
    if source.is_dir:
        return (source.path / "gtFine").is_dir()
    data = source.sniff_json()
    return isinstance(data, dict) and "objects" in data and "imgHeight" in data


def _read(source: Source, options: ReadOptions) -> list[ImageAnnotation]:
    if source.is_dir:
        return read_cityscapes(source.path, options.label_key, options.drops)
    return [parse_cityscapes(source.path, source.json(), options.drops)]


#: Its records carry their split and pair with leftImg8bit/ themselves: images no record
#: names (the test split's, say) are not "uncovered".
READER = Reader(name="cityscapes", detect=_is_cityscapes, read=_read, folders=True, names_images=False, pil_fill=True)
