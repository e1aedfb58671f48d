"""Read a dataset that already comes as mask images: CVAT's "Segmentation mask 1.1" layout.

The layout (also Pascal VOC's), in one folder::

    labelmap.txt                       # label:r,g,b:parts:actions, one label a line
    JPEGImages/<stem>.<any image ext>  # the photos (CVAT keeps their own extension)
    SegmentationClass/<stem>.png       # colour masks: RGB, or a palette PNG
    ImageSets/Segmentation/<split>.txt # optional: one stem a line (train, val, test, ...)

``fetch.annotations`` names ``labelmap.txt`` or the folder holding ``SegmentationClass/``;
``fetch.images`` may name that folder when the labelmap sits elsewhere (a labelmap shared
by several such folders).

Each mask becomes one record whose regions are ``mask`` shapes, one per colour present,
labelled by the labelmap: painted in turn they give back the mask exactly, so rasterize
passes the mask through and every later stage is unchanged. In a palette PNG, index 255
is Pascal VOC's object border: it becomes ``ignore``. Split files named train, val or test
(also training, valid, validation, testing) give their images that split; others
(``default``, ``trainval``) give none. ``SegmentationObject/`` (instances) is not read.

Bad records (an error, or dropped and counted with ``fetch.bad_records: skip``): a mask
without an image, an image without a mask, a mask whose size is not its image's, a colour
that the labelmap does not list, a split file naming an image that has no mask.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from pycocotools import mask as coco_mask

from segflow.data.drops import Drops
from segflow.data.readers.base import Reader, ReadOptions, Source
from segflow.data.readers.common import guard_pixels, read_text
from segflow.data.readers.image_files import IMAGE_SUFFIXES
from segflow.data.records import ImageAnnotation, Region
from segflow.errors import AnnotationError

__all__ = ["LABELMAP", "MASK_FOLDER", "READER", "image_size", "is_mask_layout", "read_labelmap", "read_masks"]

#: The file naming each label's colour, and the folders of the layout.
LABELMAP = "labelmap.txt"
MASK_FOLDER, IMAGE_FOLDER, SPLIT_FOLDER = "SegmentationClass", "JPEGImages", "ImageSets/Segmentation"
# Split file stems (lower case) that name a split; the others (default, trainval) name none.
_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val"}
_SPLITS |= {"test": "test", "testing": "test"}
# Pascal VOC's palette index for object borders and uncertain pixels.
_VOC_BORDER = 255
# EXIF orientations that swap width and height (the image is decoded upright).
_TURNED = (5, 6, 7, 8)


def is_mask_layout(path: Path) -> bool:
    """Whether `path` is a ``labelmap.txt`` or a folder holding ``SegmentationClass/``."""
    return path.name.lower() == LABELMAP if not path.is_dir() else (path / MASK_FOLDER).is_dir()


def read_labelmap(path: Path) -> dict[tuple[int, int, int], str]:
    """``labelmap.txt``'s colours and their labels, in the file's order."""
    labels: dict[tuple[int, int, int], str] = {}
    for number, line in enumerate(read_text(path, "CVAT").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rsplit(":", 3)  # a label may hold ':'; colour, parts and actions do not
        try:
            colour = tuple(int(v) for v in fields[1].split(","))
        except (IndexError, ValueError):
            colour = ()
        if len(fields) < 2 or not fields[0].strip() or len(colour) != 3 or not all(0 <= c <= 255 for c in colour):
            raise AnnotationError(
                f"{path} line {number}: {line.strip()!r} is not 'label:r,g,b::'; fix the line or export again",
                reason="unreadable file",
            )
        if colour in labels:
            raise AnnotationError(
                f"{path} line {number}: colour {colour} is {labels[colour]!r}'s too; give each label its own colour",
                reason="unreadable file",
            )
        labels[colour] = fields[0].strip()
    if not labels:
        raise AnnotationError(f"{path}: lists no label; export the dataset again from CVAT", reason="unreadable file")
    return labels


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of the image upright (EXIF orientation applied), from its header."""
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112) in _TURNED:
            width, height = height, width
    return height, width


def _colours(path: Path) -> tuple[np.ndarray, dict[int, tuple[int, int, int] | None]]:
    """The mask as (H, W) int32 keys, and each key's colour (None: VOC's border, ignore)."""
    with Image.open(path) as image:
        if image.mode == "P":
            indices = np.asarray(image, dtype=np.int32)
            flat = image.getpalette() or []
            palette = {
                i: None if i == _VOC_BORDER else tuple(flat[3 * i : 3 * i + 3]) or (0, 0, 0)
                for i in np.unique(indices).tolist()
            }
            return indices, palette
        rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return keys, {k: (k >> 16, (k >> 8) & 255, k & 255) for k in np.unique(keys).tolist()}


def _record(mask: Path, image: str, layout: Path, labels: dict, labelmap: Path) -> ImageAnnotation:
    """One mask as a record of one ``mask`` region per colour."""
    name = mask.relative_to(layout).as_posix()
    both = f"{layout / name} (mask of {layout / image})"
    guard_pixels(mask, both)
    try:
        keys, colours = _colours(mask)
        size = image_size(layout / image)
    except (OSError, UnidentifiedImageError) as exc:
        raise AnnotationError(f"{both}: cannot read it ({exc}); replace the file", reason="unreadable image") from None
    if keys.shape != size:
        raise AnnotationError(
            f"{both}: the mask is {keys.shape[1]}x{keys.shape[0]}, the image {size[1]}x{size[0]}; export the "
            "masks again at the images' size",
            reason="mask size mismatch",
        )
    unknown = {colour for colour in colours.values() if colour is not None and colour not in labels}
    if unknown:
        raise AnnotationError(
            f"{both}: colours {sorted(unknown)[:5]} are not in {labelmap} (which lists {list(labels)}); add them "
            "with their label, or repaint those pixels",
            reason="unknown colour",
        )
    order = {colour: i for i, colour in enumerate(labels)}
    regions = []
    for key, colour in sorted(colours.items(), key=lambda item: order.get(item[1], -1)):
        label = "ignore" if colour is None else labels[colour]
        rle = coco_mask.encode(np.asfortranarray(keys == key, dtype=np.uint8))
        geometry = {"counts": rle["counts"].decode("ascii"), "size": list(keys.shape)}
        origin = f"{name} {'border (index 255)' if colour is None else f'colour {colour}'}"
        regions.append(Region(label=label, shape="mask", geometry=geometry, origin=origin))
    return ImageAnnotation(filename=image, regions=tuple(regions), origin=name)


def _splits(layout: Path, stems: set[str], drops: Drops) -> dict[str, str]:
    """stem -> split from ``ImageSets/Segmentation/*.txt`` named like a split."""
    found: dict[str, str] = {}
    folder = layout / SPLIT_FOLDER
    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        split = _SPLITS.get(path.stem.lower())
        if split is None:
            continue
        for number, line in enumerate(read_text(path, "CVAT").splitlines(), 1):
            stem = line.strip()
            if not stem:
                continue  # a trailing empty line
            if stem not in stems:
                drops.bad(
                    AnnotationError(
                        f"{path} line {number}: {stem!r} has no mask in {layout / MASK_FOLDER}; remove the line "
                        "or add the mask",
                        reason="missing image",
                    )
                )
            elif found.setdefault(stem, split) != split:
                raise AnnotationError(
                    f"{path} line {number}: {stem!r} is in the {found[stem]} split too; keep it in one split file"
                )
    return found


def read_masks(
    path: Path, label_key: str = "", drops: Drops | None = None, images: Path | None = None
) -> list[ImageAnnotation]:
    """Read the layout that `path` (``labelmap.txt`` or the layout folder) names; `label_key` is unused.

    Args:
        images: the layout folder when it is not `path` (nor `path`'s folder).

    Returns:
        One record per mask, in file name order; file names are relative to the layout folder.
    """
    drops = drops or Drops()
    layout = images if images is not None else (path if path.is_dir() else path.parent)
    labelmap = path / LABELMAP if path.is_dir() else path
    if not labelmap.is_file():
        raise AnnotationError(
            f"{labelmap}: no labelmap (label:r,g,b lines) for the colour masks; point fetch.annotations at it, "
            "and fetch.images at the folder holding SegmentationClass/"
        )
    labels = read_labelmap(labelmap)
    if not (layout / MASK_FOLDER).is_dir():
        raise AnnotationError(
            f"{layout}: no {MASK_FOLDER}/ folder of masks; set fetch.images to the folder that holds it"
        )
    by_stem: dict[str, list[str]] = defaultdict(list)
    image_folder = layout / IMAGE_FOLDER
    for file in sorted(image_folder.iterdir()) if image_folder.is_dir() else []:
        if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
            by_stem[file.stem].append(file.relative_to(layout).as_posix())
    masks = sorted(p for p in (layout / MASK_FOLDER).iterdir() if p.suffix.lower() == ".png" and p.is_file())
    splits = _splits(layout, {mask.stem for mask in masks}, drops)
    records = []
    for mask in masks:
        try:
            candidates = by_stem.get(mask.stem, [])
            if len(candidates) != 1:
                problem = f"matches {candidates}" if candidates else f"has no image {image_folder}/{mask.stem}.*"
                raise AnnotationError(
                    f"{mask}: the mask {problem}; keep exactly one image of that name in {image_folder}",
                    reason="missing image" if not candidates else "ambiguous image",
                )
            record = _record(mask, candidates[0], layout, labels, labelmap)
            records.append(replace(record, split=splits.get(mask.stem, "")))
        except AnnotationError as exc:
            drops.bad(exc)
    masked = {mask.stem for mask in masks}
    for stem, files in sorted(by_stem.items()):
        if stem not in masked:
            drops.bad(
                AnnotationError(
                    f"{layout / files[0]}: an image without a mask {layout / MASK_FOLDER}/{stem}.png; add the "
                    "mask, remove the image, or set fetch.bad_records: skip to leave it out",
                    reason="image without mask",
                )
            )
    return records


def _declared_labels(path: Path) -> list[str]:
    """The labels ``labelmap.txt`` names (none without one)."""
    labelmap = path / LABELMAP if path.is_dir() else path
    return list(read_labelmap(labelmap).values()) if labelmap.is_file() else []


def _read(source: Source, options: ReadOptions) -> list[ImageAnnotation]:
    return read_masks(source.path, options.label_key, options.drops, images=options.images)


#: Tried first: the layout's folder may also hold images only, or .json files.
READER = Reader(
    name="masks",
    detect=lambda source: is_mask_layout(source.path),
    read=_read,
    folders=True,
    names_images=False,
    labels=_declared_labels,
)
