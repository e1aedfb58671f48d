"""Annotation readers: one module per tool, each returning `ImageAnnotation` records.

=========== ============================================ =================================
format      reads                                        module
=========== ============================================ =================================
via_csv     a VIA 1.x/2.x CSV export                     `segflow.data.readers.via`
via_json    a VIA 1.x/2.x JSON export or project file    `segflow.data.readers.via`
coco        a COCO instances JSON (polygons, RLE, bbox)  `segflow.data.readers.coco`
labelme     a LabelMe JSON file, or a folder of them     `segflow.data.readers.labelme`
cityscapes  a Cityscapes folder (gtFine/ + leftImg8bit/) `segflow.data.readers.cityscapes`
cvat        a CVAT for images 1.1 XML export             `segflow.data.readers.cvat`
masks       colour masks: CVAT's Segmentation mask 1.1   `segflow.data.readers.masks`
            (labelmap.txt, JPEGImages/, SegmentationClass/)
mask_images a folder of masks (class-index, palette or      `segflow.data.readers.mask_images`
            colour PNGs) paired with images by name
label_studio a Label Studio JSON export (a list of tasks)  `segflow.data.readers.label_studio`
=========== ============================================ =================================

``"auto"`` tells them apart: a ``.csv`` is VIA; an ``.xml`` whose root element is
``<annotations>`` is CVAT; ``labelmap.txt``, or a folder holding ``SegmentationClass/``,
is a CVAT mask dataset; a folder holding images and no .json/.xml/.csv/.txt (or files
ending in ``fetch.mask_suffix``) is a folder of masks; a ``.json`` is parsed once and
recognised by its keys (COCO: ``images`` + ``annotations`` + ``categories``; LabelMe:
``shapes`` + ``imagePath``; Cityscapes: ``imgHeight`` + ``objects``; VIA: image
records with ``filename`` and ``regions``, or ``_via_img_metadata``; Label Studio: a
list of tasks with ``data`` and ``annotations``); a folder holding
``gtFine/`` is Cityscapes, and a folder of ``.json`` files is LabelMe.

To add a format, write its module, add it to `_FILE_READERS` or `_FOLDER_READERS`, and
teach `detect_format` to recognise it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from segflow.config.data import AnnotationFormat
from segflow.data.drops import Drops
from segflow.data.readers.cityscapes import parse_cityscapes, read_cityscapes
from segflow.data.readers.coco import CROWD_CHOICES, parse_coco
from segflow.data.readers.common import load_json
from segflow.data.readers.cvat import is_cvat_xml, read_cvat
from segflow.data.readers.label_studio import is_label_studio_export, parse_label_studio
from segflow.data.readers.labelme import parse_labelme, read_labelme
from segflow.data.readers.mask_images import MaskRules, is_mask_images, read_mask_images
from segflow.data.readers.masks import is_mask_layout, read_masks
from segflow.data.readers.via import parse_via_json, read_via_csv
from segflow.data.records import ImageAnnotation
from segflow.errors import AnnotationError

__all__ = ["FORMATS", "CROWD_CHOICES", "detect_format", "read_annotation_file", "read_detected"]

# (path, parsed JSON, label_key, drops, crowd) -> records, for formats read from one JSON file.
_JsonParser = Callable[[Path, Any, str, Drops, str], list[ImageAnnotation]]
_FILE_READERS: dict[str, _JsonParser] = {
    "via_json": lambda path, data, key, drops, crowd: parse_via_json(path, data, key, drops),
    "coco": lambda path, data, key, drops, crowd: parse_coco(path, data, key, drops, crowd),
    "labelme": lambda path, data, key, drops, crowd: [parse_labelme(path, data, drops)],
    "cityscapes": lambda path, data, key, drops, crowd: [parse_cityscapes(path, data, drops)],
}
_FOLDER_READERS = {"labelme": read_labelme, "cityscapes": read_cityscapes}

#: Accepted values of the format argument: "auto" (detect) or a reader name.
FORMATS = get_args(AnnotationFormat)


def _json_format(path: Path, data: Any) -> str:
    """The format of a parsed JSON annotation file, recognised by its keys."""
    if isinstance(data, dict):
        if {"images", "annotations", "categories"} <= data.keys():
            return "coco"
        if {"shapes", "imagePath"} <= data.keys():
            return "labelme"
        if "objects" in data and "imgHeight" in data:
            return "cityscapes"
        if "_via_img_metadata" in data or any(
            isinstance(entry, dict) and "filename" in entry and "regions" in entry for entry in data.values()
        ):
            return "via_json"
    if is_label_studio_export(data):
        return "label_studio"
    raise AnnotationError(
        f"{path}: cannot tell which tool wrote this JSON (it is not COCO, LabelMe, Cityscapes, "
        f"VIA or a Label Studio JSON export by its keys); set fetch.format to one of {list(FORMATS[1:])}",
        reason="unreadable file",
    )


def detect_format(path: Path, data: Any = None) -> str:
    """The reader for `path` (`data`: its parsed JSON, if already loaded)."""
    if path.is_dir():
        if (path / "gtFine").is_dir():
            return "cityscapes"
        if is_mask_layout(path):
            return "masks"
        if is_mask_images(path):
            return "mask_images"
        if next(path.rglob("*.json"), None) is not None:
            return "labelme"
        raise AnnotationError(
            f"{path}: a folder with neither gtFine/ (Cityscapes), .json files (LabelMe) nor only images (masks); "
            "point fetch.annotations at an annotation file or such a folder"
        )
    if is_mask_layout(path):
        return "masks"
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "via_csv"
    if suffix == ".xml":
        if is_cvat_xml(path):
            return "cvat"
        raise AnnotationError(
            f"{path}: an XML file whose root element is not <annotations>, so not a CVAT for images 1.1 "
            f"export (Pascal VOC's per-image XML is not read); set fetch.format to one of {list(FORMATS[1:])}"
        )
    if suffix == ".json":
        return _json_format(path, load_json(path, "your annotation tool") if data is None else data)
    raise AnnotationError(
        f"{path}: cannot tell the annotation format from the extension {suffix!r} "
        f"(known: ['.csv', '.json', '.xml', a folder]); set the format to one of {list(FORMATS[1:])}"
    )


def read_detected(
    path: Path,
    fmt: str,
    label_key: str,
    drops: Drops | None = None,
    *,
    crowd: str = "class",
    images: Path | None = None,
    masks: MaskRules | None = None,
) -> tuple[str, list[ImageAnnotation]]:
    """`read_annotation_file`, also returning the format it read (detected for "auto").

    `images` (``fetch.images``; None = the annotation file's folder) is where CVAT's and
    Label Studio's image names are looked up (their readers resolve bare names to files in
    sub-folders), and the mask-image layout's folder. `masks`: how a folder of masks is read.
    """
    if fmt not in FORMATS:
        raise AnnotationError(f"unknown annotation format {fmt!r}; choose from {list(FORMATS)}")
    drops = drops or Drops()
    if fmt == "masks" or (fmt == "auto" and is_mask_layout(path)):
        return "masks", read_masks(path, label_key, drops, images=images)
    if fmt == "mask_images" or (fmt == "auto" and is_mask_images(path, masks)):
        return "mask_images", read_mask_images(path, drops, images=images, rules=masks)
    if path.is_dir():
        fmt = detect_format(path) if fmt == "auto" else fmt
        if fmt not in _FOLDER_READERS:
            raise AnnotationError(
                f"{path}: is a folder, but {fmt} reads one file; point fetch.annotations at the "
                f"file, or use a folder format {sorted(_FOLDER_READERS)}"
            )
        return fmt, _FOLDER_READERS[fmt](path, label_key, drops)
    if fmt == "via_csv" or (fmt == "auto" and path.suffix.lower() == ".csv"):
        return "via_csv", read_via_csv(path, label_key, drops)
    if fmt == "auto" and path.suffix.lower() == ".xml":
        fmt = detect_format(path)
    if fmt == "cvat":
        return "cvat", read_cvat(path, label_key, drops, images=images)
    data = None
    if fmt != "auto" or path.suffix.lower() == ".json":
        data = load_json(path, "your annotation tool")
    fmt = detect_format(path, data) if fmt == "auto" else fmt
    if fmt == "label_studio":
        return fmt, parse_label_studio(path, data, drops, images=images)
    return fmt, _FILE_READERS[fmt](path, data, label_key, drops, crowd)


def read_annotation_file(
    path: Path, fmt: str, label_key: str, drops: Drops | None = None, *, crowd: str = "class"
) -> list[ImageAnnotation]:
    """Read one annotation export (a file or a folder) with the reader for `fmt`.

    Args:
        path: the annotation file or folder.
        fmt: one of `FORMATS`; ``"auto"`` detects it (see the module docstring).
        label_key: the VIA region attribute holding the label, e.g. ``"labels"``.
        drops: where bad records go; None (or a strict one) raises at the first.
        crowd: what COCO crowd annotations become, one of `CROWD_CHOICES`.
    """
    return read_detected(path, fmt, label_key, drops, crowd=crowd)[1]
