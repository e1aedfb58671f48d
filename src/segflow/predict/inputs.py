"""What `segflow predict` reads: the photos of a folder, a glob, an archive or one file.

Each photo has a name, its path relative to the source (the folder; the glob's fixed
part; the archive's top, or its only folder), which names its outputs and is the file
name written in exported annotations. Files whose suffix is not an image's
(`IMAGE_SUFFIXES`) are left out; hidden files and folders too. An archive is extracted
into a temporary folder for the run (`open_source` is a context manager).
"""

from __future__ import annotations

import glob
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from segflow.data.archives import ARCHIVE_SUFFIXES, ExtractLimits, unpack
from segflow.data.readers.image_files import IMAGE_SUFFIXES
from segflow.errors import SourceError

__all__ = ["Photo", "open_source"]


@dataclass(frozen=True)
class Photo:
    """One photo to segment: its name (posix, relative to the source) and its file."""

    name: str
    path: Path


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def _folder(root: Path) -> list[Photo]:
    photos = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith(".") and name != "__MACOSX")
        for name in sorted(files):
            path = Path(folder) / name
            if _is_image(path):
                photos.append(Photo(path.relative_to(root).as_posix(), path))
    return photos


def _extract(archive: Path, into: Path, limits: ExtractLimits | None) -> Path:
    """Extract `archive` into `into` (no path may leave it, within `limits`); returns the photos' root."""
    unpack(archive, into, limits)
    entries = [entry for entry in into.iterdir() if entry.name != "__MACOSX"]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else into


@contextmanager
def open_source(source: str | Path, limits: ExtractLimits | None = None) -> Iterator[list[Photo]]:
    """The photos `source` names, sorted by name: a folder (with its sub-folders), a glob
    (``photos/**/*.jpg``), a .zip / .tar(.gz, .bz2, .xz) / .tgz archive, or one image.
    An archive is extracted within `limits` (default: params' defaults) into a temporary
    folder, deleted when the run ends or an archive is refused.

    Raises:
        SourceError: nothing there, or no image in it.
    """
    text = os.path.expanduser(str(source))
    path = Path(text)
    with tempfile.TemporaryDirectory(prefix="segflow-predict-") as tmp:
        if path.is_dir():
            photos = _folder(path)
        elif path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES):
            photos = _folder(_extract(path, Path(tmp), limits))
        elif path.is_file():
            photos = [Photo(path.name, path)]
        elif any(char in text for char in "*?["):
            found = sorted(Path(match) for match in glob.glob(text, recursive=True))
            found = [match for match in found if match.is_file() and _is_image(match)]
            root = Path(os.path.commonpath([match.parent for match in found])) if found else path
            photos = [Photo(match.relative_to(root).as_posix(), match) for match in found]
        else:
            raise SourceError(f"{source}: no such folder, file or archive; give a folder, a glob or an archive")
        if not photos:
            raise SourceError(
                f"{source}: no images in it (looked for {', '.join(IMAGE_SUFFIXES)}); give a folder of photos"
            )
        yield sorted(photos, key=lambda photo: photo.name)
