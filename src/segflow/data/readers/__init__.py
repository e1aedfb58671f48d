"""Annotation readers: one module per format, each ending with its `Reader` (`base`).

`READERS` below is the one list of formats. ``fetch.format`` names one of them, or
``"auto"``: then each reader's ``detect`` is asked in the list's order and the first that
says yes reads the source. The README's "Your own data" table says which tool writes each
and the params it needs; ``fetch.format``'s accepted values (`segflow.config.data.
AnnotationFormat`, which may not import this package) are checked against the list by
tests/data/test_readers.py.

To add a format: write its module (a `Reader` named ``READER``), put it in `READERS` where
its detection belongs, add its name to ``AnnotationFormat``, a test file and a README row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

from segflow.config.data import AnnotationFormat
from segflow.data.drops import Drops
from segflow.data.readers import cityscapes, coco, cvat, label_studio, labelme, mask_images, masks, via
from segflow.data.readers.base import Reader, ReadOptions, Source
from segflow.data.readers.coco import CROWD_CHOICES
from segflow.data.readers.mask_images import MaskRules
from segflow.data.records import ImageAnnotation
from segflow.errors import AnnotationError

__all__ = [
    "READERS",
    "FORMATS",
    "CROWD_CHOICES",
    "Reader",
    "reader_named",
    "detect_format",
    "read_annotation_file",
    "read_detected",
]

#: Every reader, in the order ``"auto"`` tries them. The mask layouts come first (their
#: folders may also hold .json files or only images), then COCO (a .json file only), then
#: Cityscapes' folder (gtFine/) before LabelMe's (any .json), then files by suffix and
#: JSON by its keys.
READERS: list[Reader] = [
    masks.READER,
    mask_images.READER,
    coco.READER,
    cityscapes.READER,
    labelme.READER,
    via.CSV_READER,
    cvat.READER,
    via.JSON_READER,
    label_studio.READER,
]

#: Accepted values of the format argument: "auto" (detect) or a reader name.
FORMATS = get_args(AnnotationFormat)


def reader_named(name: str) -> Reader:
    """The reader of `READERS` called `name`.

    Raises:
        AnnotationError: no reader has that name; the message lists `FORMATS`.
    """
    for reader in READERS:
        if reader.name == name:
            return reader
    raise AnnotationError(f"unknown annotation format {name!r}; choose from {list(FORMATS)}")


def _unrecognised(source: Source) -> AnnotationError:
    """Why no reader recognised `source`, for the kinds of source the readers know."""
    path, choose = source.path, list(FORMATS[1:])
    if source.is_dir:
        suffix = source.masks.mask_suffix if source.masks else ""
        masks = f"masks ending in fetch.mask_suffix {suffix!r}" if suffix else "only images (masks)"
        return AnnotationError(
            f"{path}: a folder with neither gtFine/ (Cityscapes), .json files (LabelMe) nor {masks}; "
            "point fetch.annotations at an annotation file or such a folder"
        )
    if source.suffix == ".xml":
        return AnnotationError(
            f"{path}: an XML file whose root element is not <annotations>, so not a CVAT for images 1.1 "
            f"export (Pascal VOC's per-image XML is not read); set fetch.format to one of {choose}"
        )
    if source.suffix == ".json":
        return AnnotationError(
            f"{path}: cannot tell which tool wrote this JSON (it is not COCO, LabelMe, Cityscapes, "
            f"VIA or a Label Studio JSON export by its keys); set fetch.format to one of {choose}",
            reason="unreadable file",
        )
    return AnnotationError(
        f"{path}: cannot tell the annotation format from the extension {source.suffix!r} "
        f"(known: ['.csv', '.json', '.xml', a folder]); set the format to one of {choose}"
    )


def _detect(source: Source) -> Reader:
    for reader in READERS:
        if reader.detect(source):
            return reader
    raise _unrecognised(source)


def detect_format(path: Path, data: Any = None, masks: MaskRules | None = None) -> str:
    """The name of the reader for `path` (`data`: its parsed JSON, if already loaded;
    `masks`: how a folder of mask images is named)."""
    return _detect(Source(path, masks) if data is None else Source(path, masks, data)).name


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
    source = Source(path, masks)
    reader = _detect(source) if fmt == "auto" else reader_named(fmt)
    if source.is_dir and not reader.folders:
        folder_formats = sorted(r.name for r in READERS if r.folders)
        raise AnnotationError(
            f"{path}: is a folder, but {reader.name} reads one file; point fetch.annotations at the "
            f"file, or use a folder format {folder_formats}"
        )
    options = ReadOptions(label_key, drops or Drops(), crowd=crowd, images=images)
    return reader.name, reader.read(source, options)


def read_annotation_file(
    path: Path, fmt: str, label_key: str, drops: Drops | None = None, *, crowd: str = "class"
) -> list[ImageAnnotation]:
    """Read one annotation export (a file or a folder) with the reader for `fmt`.

    Args:
        path: the annotation file or folder.
        fmt: one of `FORMATS`; ``"auto"`` detects it (see `READERS`).
        label_key: the VIA region attribute holding the label, e.g. ``"labels"``.
        drops: where bad records go; None (or a strict one) raises at the first.
        crowd: what COCO crowd annotations become, one of `CROWD_CHOICES`.
    """
    return read_detected(path, fmt, label_key, drops, crowd=crowd)[1]
