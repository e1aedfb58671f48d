"""The contract every annotation reader implements: a `Reader`, handed a `Source`.

A format is one module in this package that ends with its `Reader`, e.g. COCO's::

    READER = Reader(name="coco", detect=_is_coco, read=_read, labels=read_coco_categories)

listed once in `segflow.data.readers.READERS`, the registry that ``fetch.format``,
detection (``"auto"``), fetch's uncovered-image check, ``classes.names: auto``'s declared
labels and ``rasterize.fill: auto`` all consult. Nothing else names the format.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from segflow.data.drops import Drops
from segflow.data.readers.common import load_json
from segflow.data.records import ImageAnnotation

if TYPE_CHECKING:
    from segflow.data.readers.mask_images import MaskRules

__all__ = ["Source", "ReadOptions", "Reader"]

_UNREAD = object()


class Source:
    """An annotation file or folder being detected and read; a JSON file is parsed once.

    Args:
        path: the file or folder (``fetch.annotations``, or one of its matches).
        masks: how a folder of mask images is named and read (``fetch.mask_suffix``, value
            maps): whether a folder holds masks depends on it.
        data: the file's JSON, if already parsed.
    """

    def __init__(self, path: Path, masks: MaskRules | None = None, data: Any = _UNREAD) -> None:
        self.path = path
        self.masks = masks
        self._data = data

    @cached_property
    def is_dir(self) -> bool:
        return self.path.is_dir()

    @property
    def suffix(self) -> str:
        """The file's suffix in lower case (``".json"``); ``""`` for a folder."""
        return "" if self.is_dir else self.path.suffix.lower()

    def json(self) -> Any:
        """The file parsed as JSON; a broken file raises naming its line and column."""
        if self._data is _UNREAD:
            self._data = load_json(self.path, "your annotation tool")
        return self._data

    def sniff_json(self) -> Any:
        """`json` for a ``.json`` file, None for any other source: what the formats that are
        recognised by their keys detect on."""
        return self.json() if self.suffix == ".json" else None


@dataclass(frozen=True)
class ReadOptions:
    """What every reader is handed besides its source (``fetch`` params)."""

    #: VIA's region attribute holding the label (``fetch.label_key``); other formats ignore it.
    label_key: str
    #: Where bad records go; a strict one raises at the first.
    drops: Drops
    #: What COCO crowd annotations become (``fetch.coco_crowd``).
    crowd: str = "class"
    #: The folder image names are looked up in (``fetch.images``); None = beside the annotations.
    images: Path | None = None


def _declares_nothing(path: Path) -> list[str]:
    return []


@dataclass(frozen=True)
class Reader:
    """One annotation format: how ``fetch.format: auto`` recognises it, and how it is read."""

    #: The ``fetch.format`` value, also written in the fetch manifest.
    name: str
    #: Whether the source is this format. Cheap (a suffix, a folder name, the JSON's keys),
    #: and False, not an error, for another format's source; it raises only for a source
    #: that cannot be read at all (a broken .json or .xml).
    detect: Callable[[Source], bool]
    #: The source's records; bad records go to ``options.drops``.
    read: Callable[[Source, ReadOptions], list[ImageAnnotation]]
    #: It reads a folder; else a folder given as this format is refused.
    folders: bool = False
    #: Its records name their images, so an image below the source that none names is left
    #: out and listed; False where the reader pairs masks with images itself.
    names_images: bool = True
    #: Its own tool rasterizes with PIL (Cityscapes' json2labelImg, labelme2voc), so
    #: ``rasterize.fill: auto`` does too.
    pil_fill: bool = False
    #: The labels the file (or folder) declares, also those no region uses (CVAT's
    #: ``<meta>``, COCO's categories): ``fetch.unused_labels`` reports or keeps them.
    labels: Callable[[Path], list[str]] = _declares_nothing
