"""``classes.names: auto`` in the fetch stage: the labels a source's annotations name or declare.

The class list is background plus every class that a region's label maps to (through
``classes.label_map``; ``ignore`` left out), every label a CVAT XML declares in its
``<meta>`` or a ``labelmap.txt`` lists (also those no region uses), and the class of
``fetch.default_label``: sorted, so the same annotations always give the same list and
mask values. Label Studio's JSON export does not carry the project's labeling config, so
only the labels its regions use are found.
"""

from __future__ import annotations

import logging
from pathlib import Path

from segflow.config import AUTO, Params
from segflow.config.auto_classes import with_names
from segflow.data.collect import Collected
from segflow.data.readers.cvat import read_cvat_labels
from segflow.data.readers.masks import LABELMAP, read_labelmap
from segflow.errors import ConfigError

__all__ = ["declared_labels", "resolve_classes"]

log = logging.getLogger(__name__)


def declared_labels(path: Path, fmt: str) -> list[str]:
    """The labels the annotation file (or folder) `path`, read as `fmt`, declares; [] if none."""
    if fmt == "cvat":
        return read_cvat_labels(path)
    if fmt == "masks":
        labelmap = path / LABELMAP if path.is_dir() else path
        return list(read_labelmap(labelmap).values()) if labelmap.is_file() else []
    return []


def resolve_classes(params: Params, root: Path, collected: Collected) -> Params:
    """`params` with ``classes.names: auto`` replaced by the classes found; as is otherwise.

    Raises:
        ConfigError: no label found, or the found names do not fit the classes section.
    """
    if params.classes.names != AUTO:
        return params
    labels = [region.label for record in collected.records for region in record.regions]
    for file, fmt in zip(collected.files, collected.formats, strict=True):
        labels += declared_labels(root / file, fmt)
    if params.fetch.default_label:
        labels.append(params.fetch.default_label)
    names = params.classes.auto_names(labels)
    if len(names) < 2:
        raise ConfigError(
            f"classes.names is auto, but {collected.files} name no class besides background (no region "
            "has a label that maps to a class); set fetch.default_label to name the class of unlabeled "
            "regions, or type classes.names in params.yaml"
        )
    log.info("classes.names: auto found %s", names)
    return with_names(params, names)
