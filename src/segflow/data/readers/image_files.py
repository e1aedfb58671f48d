"""The image files below a folder: resolving the names annotation tools write for them.

Tools write an image's name as it was when it was uploaded: often a bare file name, while
people keep the files in sub-folders (one per class, or the ``images/`` folder of a
tool's own dataset export). `ImageFiles` lists the folder once and resolves a name to
the one file it can mean, or says why it cannot.
"""

from __future__ import annotations

import os
import posixpath
from collections import defaultdict
from pathlib import Path

from segflow.errors import AnnotationError

__all__ = ["IMAGE_SUFFIXES", "ImageFiles"]

#: File suffixes (lower case) counted as images.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageFiles:
    """The files below `root`, by name.

    Symlinked folders are not followed (no loops); hidden ones (.git, caches) are skipped.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_name: dict[str, list[str]] = defaultdict(list)
        for folder, subfolders, files in os.walk(root):
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
            prefix = Path(folder).relative_to(root).as_posix()
            for name in sorted(files):
                self.by_name[name].append(name if prefix == "." else f"{prefix}/{name}")

    @classmethod
    def of_annotations(cls, path: Path, images: Path | None) -> ImageFiles:
        """The images an annotation file `path` names: below `images` (``fetch.images``) if
        given, else beside the file.

        Raises:
            AnnotationError: that folder does not exist.
        """
        root = images if images is not None else path.parent
        if not root.is_dir():
            raise AnnotationError(f"{root}: the images folder of {path} does not exist; set fetch.images")
        return cls(root)

    def images(self) -> list[str]:
        """Every image file below the root, by its path relative to it, sorted."""
        rels = (rel for rels in self.by_name.values() for rel in rels)
        return sorted(rel for rel in rels if posixpath.splitext(rel)[1].lower() in IMAGE_SUFFIXES)

    def resolve(self, name: str, where: str, fix: str) -> str:
        """The path (relative to the root) of the image the annotations call `name`.

        A name that is a file below the root is taken as it is; otherwise the one file
        whose path ends with the name. `where` and `fix` start and end the error messages.

        Raises:
            AnnotationError: no file, or several, match the name.
        """
        if (self.root / name).is_file():
            return posixpath.normpath(name)
        tail = posixpath.normpath(name).lstrip("/")
        same_name = self.by_name.get(posixpath.basename(tail), [])
        found = [rel for rel in same_name if rel == tail or rel.endswith("/" + tail)]
        if len(found) == 1:
            return found[0]
        if found:
            raise AnnotationError(
                f"{where}: the image name {name!r} matches {len(found)} files below {self.root}: {found[:5]}; "
                "keep one, or set fetch.images to the folder that holds these annotations' images",
                reason="ambiguous image",
            )
        raise AnnotationError(
            f"{where}: image {name!r} is neither in {self.root} nor below it; add the file, set fetch.images "
            f"to the folder holding the images, or {fix}",
            reason="missing image",
        )
