"""Which annotation files a source holds, and their records under canonical names.

``fetch.annotations`` names one file or folder, or a list of files and glob patterns
(``*/via_region_data.json``), relative to the source. Each file is read by its own reader
(``fetch.format: auto`` detects each, so one list may mix formats), and its image names
resolve against its own folder (or ``fetch.images``).

* A record's canonical filename is its image's path relative to the source, so
  ``train/1.jpg`` and ``val/1.jpg`` stay two images.
* An image named in several files gets the regions of all of them, in file order (and
  the report lists it); named twice in one file, it is a bad record, as before.
* Split: a record keeps the split its reader gave (Cityscapes); otherwise the innermost
  folder of its image path, or else of its annotation file, named like a split
  (`SPLIT_FOLDERS`, any case) gives it. Preprocess decides whether to keep it
  (``preprocess.split``).
* Uncovered images: image files below the source that no record names (an annotation
  file missing from ``fetch.annotations``, like the other split's
  ``val/via_region_data.json``; frames deleted from a CVAT task) are left out and
  listed, with the annotation files found beside them that were not read. Formats whose
  readers pair masks with images themselves (`Reader.names_images` False: masks,
  mask_images, cityscapes) are not checked: their folders hold masks beside the images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from segflow.config import FetchParams
from segflow.data.drops import Drops
from segflow.data.readers import read_detected, reader_named
from segflow.data.readers.image_files import ImageFiles
from segflow.data.readers.mask_images import MaskRules
from segflow.data.records import ImageAnnotation
from segflow.errors import AnnotationError

__all__ = [
    "SPLIT_FOLDERS",
    "Collected",
    "folder_split",
    "annotation_paths",
    "uncovered_images",
    "check_sizes",
    "collect",
]

#: Folder names (lower case) that put the images below them in a split.
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_GLOB = re.compile(r"[*?\[]")
# Annotation files (text) a folder of them may hold; the size limit applies to each.
_TEXT_SUFFIXES = (".json", ".xml", ".csv", ".txt")
_NOT_FOUND = "set fetch.source and fetch.annotations in params.yaml (did you run `dvc pull`?)"


@dataclass
class Collected:
    """The records of every annotation file, and what reading them found."""

    records: list[ImageAnnotation]
    #: Annotation files (or folders) read, relative to the source, and the format of each.
    files: list[str] = field(default_factory=list)
    formats: list[str] = field(default_factory=list)
    #: One line per image named in several files, whose regions were joined.
    merged: list[str] = field(default_factory=list)
    #: Image files below the source that no record names (see `uncovered_images`), sorted.
    uncovered: list[str] = field(default_factory=list)
    #: Files beside uncovered images named like an annotation file read, but not read.
    unread: list[str] = field(default_factory=list)


def folder_split(folder: str) -> str:
    """The split named by the innermost split-named part of `folder` (posix, relative), or ""."""
    for part in reversed(PurePosixPath(folder).parts):
        if part.lower() in SPLIT_FOLDERS:
            return SPLIT_FOLDERS[part.lower()]
    return ""


def annotation_paths(root: Path, annotations: Path | str | list[Path | str]) -> list[Path]:
    """The annotation files (or folders) `annotations` names inside `root`, in order, each once."""
    entries = [Path(entry) for entry in (annotations if isinstance(annotations, list) else [annotations])]
    if not entries:
        raise AnnotationError("fetch.annotations is an empty list; name at least one file or glob pattern")
    paths: list[Path] = []
    for entry in entries:
        if not _GLOB.search(entry.as_posix()):
            if not (root / entry).exists():
                raise AnnotationError(f"{root / entry}: annotation file not found; {_NOT_FOUND}")
            matches = [root / entry]
        elif entry.is_absolute():
            raise AnnotationError(
                f"fetch.annotations: the pattern {str(entry)!r} is absolute; write it relative to {root}"
            )
        else:
            matches = sorted(root.glob(entry.as_posix()))
            if not matches:
                raise AnnotationError(
                    f"{root}: no file matches the fetch.annotations pattern {str(entry)!r}; {_NOT_FOUND}"
                )
        paths.extend(path for path in matches if path not in paths)
    return paths


def _relative(root: Path, path: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def uncovered_images(root: Path, paths: list[Path], formats: list[str], names: set[str]) -> tuple[list[str], list[str]]:
    """The image files below `root` that none of `names` (canonical record names) is, and the
    files beside them named like one of the annotation `paths` but not among them.

    Both relative to `root`, sorted; ([], []) when a format pairs masks with images instead
    (its `Reader.names_images` is False).
    """
    if not all(reader_named(fmt).names_images for fmt in formats):
        return [], []
    uncovered = [rel for rel in ImageFiles(root).images() if rel not in names]
    read = {path.resolve() for path in paths}
    file_names = {path.name for path in paths if path.is_file()}
    beside = {root / PurePosixPath(rel).parent / name for rel in uncovered for name in file_names}
    unread = sorted(_relative(root, path) for path in beside if path.is_file() and path.resolve() not in read)
    return uncovered, unread


def _canonical_name(root: Path, image_root: Path, record: ImageAnnotation) -> str:
    """The image's path inside the source folder: its name in the snapshot."""
    if "\0" in record.filename:  # no file system allows it: a corrupt or hand-edited export
        raise AnnotationError(
            f"{record.origin}: the image name {record.filename!r} holds a NUL byte (\\x00), which no file name "
            "can; fix the name in the annotations",
            reason="bad image name",
        )
    try:
        path = (image_root / record.filename).resolve()
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError on a loop, later ones OSError
        raise AnnotationError(
            f"{record.origin}: image {record.filename} is a symlink loop ({exc}); point the link at the image "
            "file, or replace it by the file",
            reason="unreadable image",
        ) from None
    try:
        return path.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise AnnotationError(
            f"{record.origin}: image {record.filename} resolves to {path}, outside the source "
            f"folder {root}; set fetch.source to a folder holding the annotations and the images",
            reason="missing image",
        ) from None


def _reorigin(record: ImageAnnotation, path: Path, relative: str) -> ImageAnnotation:
    """`record` with origins naming its file by its path in the source (two files may share a name)."""

    def fix(origin: str) -> str:
        if path.is_dir():
            return f"{relative}/{origin}"
        return relative + origin[len(path.name) :] if origin.startswith(path.name) else origin

    regions = tuple(replace(region, origin=fix(region.origin)) for region in record.regions)
    return replace(record, origin=fix(record.origin), regions=regions)


def check_sizes(path: Path, max_bytes: int) -> None:
    """Refuse an annotation file (or, for a folder, any annotation file below it) of more than
    `max_bytes` (``fetch.max_annotation_bytes``) before it is read: a parsed JSON takes
    about 10x its size in memory."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.suffix.lower() in _TEXT_SUFFIXES]
    for file in files:
        size = file.stat().st_size
        if size > max_bytes:
            raise AnnotationError(
                f"{file}: the annotation file is {size:,} bytes, over the limit of {max_bytes:,} "
                "(fetch.max_annotation_bytes); is it an annotation export? If so, raise the limit in params.yaml",
                reason="unreadable file",
            )


def collect(root: Path, settings: FetchParams, drops: Drops, masks: MaskRules | None = None) -> Collected:
    """Read every annotation file `settings.annotations` names in `root` into canonical records.

    `masks`: how folders of mask images are read (`segflow.data.readers.mask_images.mask_rules`).
    """
    paths = annotation_paths(root, settings.annotations)
    collected = Collected(records=[])
    by_name: dict[str, tuple[ImageAnnotation, Path]] = {}
    for path in paths:
        images = root / settings.images if settings.images else None
        check_sizes(path, settings.max_annotation_bytes)
        fmt, records = read_detected(
            path, settings.format, settings.label_key, drops, crowd=settings.coco_crowd, images=images, masks=masks
        )
        relative = _relative(root, path)
        collected.files.append(relative)
        collected.formats.append(fmt)
        image_root = images or (path if path.is_dir() else path.parent)
        file_folder = relative if path.is_dir() else str(PurePosixPath(relative).parent)
        for record in records:
            if len(paths) > 1:
                record = _reorigin(record, path, relative)
            try:
                name = _canonical_name(root, image_root, record)
            except AnnotationError as exc:
                drops.bad(exc)
                continue
            split = record.split or folder_split(str(PurePosixPath(name).parent)) or folder_split(file_folder)
            record = replace(record, filename=name, split=split)
            if name not in by_name:
                by_name[name] = record, path
                continue
            first, first_path = by_name[name]
            if first_path == path:
                drops.bad(
                    AnnotationError(
                        f"{record.origin}: names the image {name} that {first.origin} names too; merge the two records",
                        reason="duplicate record",
                    )
                )
                continue
            collected.merged.append(f"{name}: {len(record.regions)} regions from {record.origin} added")
            joined = replace(
                first, regions=first.regions + record.regions, image_data=first.image_data or record.image_data
            )
            by_name[name] = joined, first_path
    collected.records = [record for record, _ in by_name.values()]
    collected.uncovered, collected.unread = uncovered_images(root, paths, collected.formats, set(by_name))
    return collected
