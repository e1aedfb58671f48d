"""``classes.names: auto`` in the fetch stage: the labels a source's annotations use or declare.

The class list is background plus every class that a region's label maps to (through
``classes.label_map``; ``ignore`` left out) and the class of ``fetch.default_label``:
sorted, so the same annotations always give the same list and mask values.

Labels a file declares but no region uses (a CVAT XML's ``<meta>`` labels, a
``labelmap.txt``, COCO categories without annotations) and image-level tags (Label
Studio's ``choices``) paint no pixel: made classes, they would be classes with no
example that training cannot learn and the metrics cannot score. So they are *unused
labels*: listed in the fetch report and logged, not made classes, unless
``fetch.unused_labels: class`` asks for them (to keep a class list stable across
batches of annotations, say).
"""

from __future__ import annotations

import logging
from pathlib import Path

from segflow.config import AUTO, IGNORE, Params
from segflow.config.auto_classes import with_names
from segflow.data.collect import Collected
from segflow.data.readers import reader_named
from segflow.errors import ConfigError

__all__ = ["declared_labels", "unused_labels", "resolve_classes"]

log = logging.getLogger(__name__)


def declared_labels(path: Path, fmt: str) -> list[str]:
    """The labels (and image-level tags) the annotation file (or folder) `path`, read as `fmt`, declares."""
    return reader_named(fmt).labels(path)


def _used_labels(params: Params, collected: Collected) -> list[str]:
    labels = [region.label for record in collected.records for region in record.regions]
    return labels + [params.fetch.default_label] if params.fetch.default_label else labels


def unused_labels(params: Params, root: Path, collected: Collected) -> list[str]:
    """The labels `collected`'s files declare whose class no region (nor fetch.default_label) has.

    In the files' order, each once; labels that map to ``ignore`` or background are left out.
    """
    used = {params.classes.class_of(label) for label in _used_labels(params, collected) if label}
    unused: list[str] = []
    for file, fmt in zip(collected.files, collected.formats, strict=True):
        for label in declared_labels(root / file, fmt):
            name = params.classes.class_of(label)
            if label and label not in unused and name not in used | {IGNORE, "background"}:
                unused.append(label)
    return unused


def resolve_classes(params: Params, root: Path, collected: Collected) -> tuple[Params, list[str]]:
    """`params` with ``classes.names: auto`` replaced by the classes found, and the unused labels.

    Unused labels (see the module docstring) are logged, and made classes only with
    ``fetch.unused_labels: class``.

    Raises:
        ConfigError: no label found, or the found names do not fit the classes section.
    """
    unused = unused_labels(params, root, collected)
    auto = params.classes.names == AUTO
    if unused:
        if not auto:
            what = "listed in the report"
        elif params.fetch.unused_labels == "class":
            what = "made classes with no pixel (fetch.unused_labels: class)"
        else:
            what = "not made classes (listed in the report); set fetch.unused_labels: class to make them classes"
        level = logging.WARNING if auto and params.fetch.unused_labels == "report" else logging.INFO
        log.log(
            level,
            "%d labels declared or tagged in %s but on no region: %s; %s",
            len(unused),
            collected.files,
            unused,
            what,
        )
    if not auto:
        return params, unused
    labels = _used_labels(params, collected)
    if params.fetch.unused_labels == "class":
        labels += unused
    names = params.classes.auto_names(labels)
    if len(names) < 2:
        hint = f" ({unused} are declared but on no region: fetch.unused_labels: class makes them classes)"
        raise ConfigError(
            f"classes.names is auto, but {collected.files} name no class besides background (no region "
            f"has a label that maps to a class){hint if unused else ''}; set fetch.default_label to name the "
            "class of unlabeled regions, or type classes.names in params.yaml"
        )
    log.info("classes.names: auto found %s", names)
    return with_names(params, names), unused
