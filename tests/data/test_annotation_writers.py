"""Pre-annotation writers: a predicted mask -> polygons -> each tool's file -> segflow's own
reader -> rasterize gives the mask back (exactly without simplification, up to the
simplification tolerance with it), with holes, several parts, specks dropped, and the
user's own labels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from segflow.config import ClassesParams
from segflow.data.draw import DrawRules, rasterize_image
from segflow.data.readers import read_detected
from segflow.data.records import ImageAnnotation, Region
from segflow.data.trace import polygons
from segflow.data.writers import EXPORT_FORMATS, ExportImage, export_labels, write_export

NAMES = ["background", "sky", "thing"]
HEIGHT, WIDTH = 96, 128
#: The reader's path and the fill rule fetch uses for it (LabelMe: PIL's, as labelme2voc).
WRITTEN = {
    "via": ("via_region_data.json", "opencv"),
    "via_csv": ("via_region_data.csv", "opencv"),
    "cvat": ("annotations.xml", "opencv"),
    "labelme": ("labelme", "pil"),
    "coco": ("instances.json", "opencv"),
}


def predicted_mask() -> np.ndarray:
    """Several parts of a class, a hole of background in a thing, a sky island in a thing,
    diagonal edges, parts touching the border, a 4-pixel speck."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:20] = 1  # sky along the top border
    mask[40:80, 10:50] = 2
    mask[52:68, 22:38] = 0  # a hole: background inside the thing
    mask[40:80, 70:110] = 2
    mask[50:70, 80:100] = 1  # a sky island inside the other thing
    cv2.circle(mask, (60, 86), 6, 1, -1)  # a second part of sky
    cv2.fillPoly(mask, [np.array([[112, 84], [127, 95], [100, 95]])], 2)  # diagonal edges, on the border
    mask[30:32, 60:62] = 2  # a speck
    return mask


def mean_iou(truth: np.ndarray, got: np.ndarray) -> float:
    scores = []
    for index in range(len(NAMES)):
        union = np.sum((truth == index) | (got == index))
        if union:
            scores.append(np.sum((truth == index) & (got == index)) / union)
    return float(np.mean(scores))


def export(tmp_path, fmt, mask, *, simplify=0.0, min_area=0, labels=NAMES, files=None):
    """Write `mask`'s polygons as the image photo.png (and optionally more) for `fmt`."""
    rename = dict(zip(NAMES, labels))
    traced = polygons(mask, NAMES, simplify, min_area, background=0)
    regions = tuple(Region(rename[r["label"]], "polygon", tuple(map(tuple, r["points"]))) for r in traced)
    images = [ExportImage(ImageAnnotation("photo.png", regions), HEIGHT, WIDTH, 1234)]
    folder = tmp_path / "export"
    cv2.imwrite(str(tmp_path / "photo.png"), np.zeros((HEIGHT, WIDTH, 3), np.uint8))  # CVAT's reader looks
    written = write_export("via" if fmt == "via_csv" else fmt, images, folder, labels)
    return folder, written, traced


def read_back(folder, tmp_path, fmt, classes: ClassesParams) -> np.ndarray:
    """The export as fetch + rasterize see it: the reader detected from the file, labels
    mapped through classes.label_map, painted in file order by the format's fill rule."""
    name, fill = WRITTEN[fmt]
    found, records = read_detected(folder / name, "auto", "label", images=tmp_path)
    assert found == ("via_json" if fmt == "via" else fmt)
    (record,) = records
    assert record.filename == "photo.png"
    mapped = ImageAnnotation(
        record.filename, tuple(Region(classes.class_of(r.label), r.shape, r.points, z=r.z) for r in record.regions)
    )
    return rasterize_image(mapped, HEIGHT, WIDTH, NAMES, 0, rules=DrawRules(fill=fill))


@pytest.mark.parametrize("fmt", sorted(WRITTEN))
def test_round_trip_without_simplification_gives_the_mask_back(tmp_path, fmt):
    mask = predicted_mask()
    folder, _, _ = export(tmp_path, fmt, mask)
    got = read_back(folder, tmp_path, fmt, ClassesParams(names=NAMES))
    # Vertices on boundary pixels, filled inclusively (OpenCV and PIL alike): every pixel back.
    assert np.array_equal(got, mask)
    assert got[60, 30] == 0 and got[60, 90] == 1  # the hole and the island survive


@pytest.mark.parametrize("fmt", sorted(WRITTEN))
def test_round_trip_with_simplification_and_specks_dropped(tmp_path, fmt):
    mask = predicted_mask()
    folder, _, traced = export(tmp_path, fmt, mask, simplify=1.0, min_area=16)
    got = read_back(folder, tmp_path, fmt, ClassesParams(names=NAMES))
    # Douglas-Peucker at 1 px moves a boundary by at most a pixel: mIoU 0.998 (LabelMe 0.9977).
    assert mean_iou(mask, got) >= 0.99
    assert got[30, 60] == 0  # the 4-pixel speck is gone: background as around it
    background = [r for r in traced if r["label"] == "background"]
    assert len(background) == 1  # only the hole: the rest of background is what no polygon covers


def test_several_parts_holes_and_paint_order():
    traced = polygons(predicted_mask(), NAMES, 0.0, 16, background=0)
    labels = [r["label"] for r in traced]
    assert labels.count("sky") == 3 and labels.count("thing") == 3 and labels.count("background") == 1
    areas = [cv2.contourArea(np.array(r["points"], np.float32)) for r in traced]
    assert areas == sorted(areas, reverse=True)  # largest first: holes and islands after what surrounds them


def test_labels_are_the_users_own_where_the_label_map_is_one_to_one(tmp_path):
    classes = ClassesParams(names=NAMES, label_map={"clouds": "sky", "car": "thing", "truck": "thing"})
    labels = export_labels(NAMES, classes.label_map)
    assert labels == ["background", "clouds", "thing"]  # two labels map to thing: its class name
    mask = predicted_mask()
    folder, written, _ = export(tmp_path, "via", mask, labels=labels)
    data = json.loads(written[0].read_text())
    (entry,) = data.values()
    assert {r["region_attributes"]["label"] for r in entry["regions"]} == {"background", "clouds", "thing"}
    assert entry["size"] == 1234 and "photo.png1234" in data  # VIA's key: name + byte size
    assert np.array_equal(read_back(folder, tmp_path, "via", classes), mask)


def test_cvat_and_coco_list_every_label_and_keep_the_paint_order(tmp_path):
    mask = predicted_mask()
    folder, written, traced = export(tmp_path, "cvat", mask)
    xml = written[0].read_text()
    assert all(f"<name>{name}</name>" in xml for name in NAMES) and 'z_order="6"' in xml
    _, written, _ = export(tmp_path, "coco", mask)
    coco = json.loads(written[0].read_text())
    assert [c["name"] for c in coco["categories"]] == NAMES
    assert len(coco["annotations"]) == len(traced) and coco["images"][0]["width"] == WIDTH
    assert set(EXPORT_FORMATS) == {"via", "cvat", "labelme", "coco"}
