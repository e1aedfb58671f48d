"""CVAT for images 1.1 XML: what CVAT's Upload annotations (format "CVAT 1.1") reads into
a task of the same images.

Each image is an ``<image>`` (name, width, height) holding ``<polygon>`` elements with
``points="x,y;x,y;..."``; ``z_order`` counts up in paint order, so a hole drawn as a
region comes out on top in CVAT as in segflow's reader (`segflow.data.readers.cvat`).
The ``<meta>`` lists every label, so CVAT can create them in a new task.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from segflow.data.writers.common import ExportImage, number
from segflow.errors import SegflowError

__all__ = ["write_cvat"]


def _points(points: tuple[tuple[float, float], ...]) -> str:
    return ";".join(f"{number(x)},{number(y)}" for x, y in points)


def write_cvat(images: list[ExportImage], path: Path, labels: list[str], task: str = "segflow predictions") -> Path:
    """CVAT for images 1.1 XML of `images` at `path`; `labels`: every label of the task."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(meta, "name").text = task
    ET.SubElement(meta, "size").text = str(len(images))
    ET.SubElement(meta, "mode").text = "annotation"
    label_list = ET.SubElement(meta, "labels")
    for label in dict.fromkeys(labels):
        element = ET.SubElement(label_list, "label")
        ET.SubElement(element, "name").text = label
        ET.SubElement(element, "type").text = "polygon"
        ET.SubElement(element, "attributes")
    for image_id, image in enumerate(images):
        attributes = {"id": str(image_id), "name": image.record.filename}
        attributes |= {"width": str(image.width), "height": str(image.height)}
        element = ET.SubElement(root, "image", attributes)
        for z, region in enumerate(image.record.regions):
            if region.shape != "polygon":
                raise SegflowError(f"{region.origin}: the CVAT writer writes polygons, not a {region.shape}")
            shape = {"label": region.label, "source": "auto", "occluded": "0", "z_order": str(z)}
            ET.SubElement(element, "polygon", {**shape, "points": _points(region.points)})
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
    return path
