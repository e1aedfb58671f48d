"""Annotation writers: canonical records -> the files an annotation tool imports.

The readers' mirror (`segflow.data.readers`): predicted polygons go back to the tool a
person annotates in, to be corrected rather than drawn (pre-annotation).

========  ==========================================  =======================================
format    writes (in the export folder)               how the tool takes it
========  ==========================================  =======================================
via       ``via_region_data.json`` and ``.csv``       VIA 2.x: add the images, then Annotation
          (VIA 2.x, keyed by file name + size)        > Import annotations (from json or csv)
cvat      ``annotations.xml`` (CVAT for images 1.1)   CVAT: a task of the same images, Actions
                                                      > Upload annotations > CVAT 1.1
labelme   ``labelme/<image>.json``, one per image     copy them beside the images, open the
                                                      folder in LabelMe
coco      ``instances.json`` (COCO instances)         any COCO importer (CVAT, Label Studio)
========  ==========================================  =======================================

Regions are written in paint order (largest first: a hole, traced as a region of the
class inside it, comes after the region around it; CVAT gets it as ``z_order``), so
segflow's readers and rasterize rebuild the mask from them. Labels are the user's own:
`export_labels` inverts ``classes.label_map`` where one label maps to a class.
"""

from __future__ import annotations

from pathlib import Path

from segflow.data.writers.coco import write_coco
from segflow.data.writers.common import ExportImage
from segflow.data.writers.cvat import write_cvat
from segflow.data.writers.labelme import write_labelme
from segflow.data.writers.via import write_via_csv, write_via_json
from segflow.errors import SegflowError

__all__ = ["EXPORT_FORMATS", "ExportImage", "export_labels", "write_export"]

#: Formats `write_export` writes.
EXPORT_FORMATS = ("via", "cvat", "labelme", "coco")


def export_labels(class_names: list[str], label_map: dict[str, str]) -> list[str]:
    """The annotation label to write for each class, one that fetch reads back as that class:
    the one label ``classes.label_map`` maps to it when there is exactly one (the user's own
    name for it), else the class name (unless the map sends that elsewhere: then the first
    label mapped to the class)."""

    def reads_as(label: str) -> str:  # as `segflow.config.ClassesParams.class_of`
        if label in label_map:
            return label_map[label]
        return label if label in class_names else label_map.get("*", label)

    labels = []
    for name in class_names:
        sources = [label for label, target in label_map.items() if target == name and label != "*"]
        candidates = sources if len(sources) == 1 else []
        labels.append(next((c for c in [*candidates, name, *sources] if reads_as(c) == name), name))
    return labels


def write_export(
    fmt: str, images: list[ExportImage], folder: Path, labels: list[str], label_key: str = "label"
) -> list[Path]:
    """Write `images` for the tool `fmt` into `folder`; returns the files written.

    Args:
        labels: every label, in class order (CVAT's and COCO's label lists).
        label_key: the VIA region attribute holding the label (``fetch.label_key``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "via":
        return [
            write_via_json(images, folder / "via_region_data.json", label_key),
            write_via_csv(images, folder / "via_region_data.csv", label_key),
        ]
    if fmt == "cvat":
        return [write_cvat(images, folder / "annotations.xml", labels)]
    if fmt == "labelme":
        return write_labelme(images, folder / "labelme")
    if fmt == "coco":
        return [write_coco(images, folder / "instances.json", labels)]
    raise SegflowError(f"unknown export format {fmt!r}; choose from {list(EXPORT_FORMATS)}")
