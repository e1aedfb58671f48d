"""COCO instances JSON: polygons, RLE (compressed and uncompressed), bbox-only, iscrowd."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from helpers import SHARED_DATASETS
from pycocotools import mask as coco_mask

from segflow.data.draw import rasterize_image
from segflow.data.drops import Drops
from segflow.data.readers import read_detected
from segflow.data.readers.coco import read_coco
from segflow.errors import AnnotationError

VIA_2LABEL_COCO = SHARED_DATASETS / "via-2label/HEAD/datasets/coco1.0/annotations/instances_default.json"


def ring_mask(height: int = 6, width: int = 8) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8, order="F")
    mask[1:4, 2:7] = 1
    return mask


def coco_file(tmp_path: Path, annotations: list[dict], height: int = 6, width: int = 8) -> Path:
    payload = {
        "images": [
            {"id": 1, "file_name": "img/a.jpg", "height": height, "width": width},
            {"id": 2, "file_name": "img/empty.jpg", "height": height, "width": width},
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}],
        "annotations": [{"id": n + 1, "image_id": 1, "iscrowd": 0, **a} for n, a in enumerate(annotations)],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(payload))
    return path


def test_polygons_rle_and_boxes(tmp_path):
    compressed = coco_mask.encode(ring_mask())
    uncompressed = {"size": [6, 8], "counts": [8, 3, 3, 3, 3, 3, 3, 3, 3, 3, 13]}
    path = coco_file(
        tmp_path,
        [
            {"category_id": 1, "segmentation": [[0, 0, 3, 0, 3, 2, 0, 0], [5, 5, 7, 5, 6, 4]]},  # 2 rings
            {"category_id": 2, "segmentation": {"size": [6, 8], "counts": compressed["counts"].decode()}},
            {"category_id": 2, "segmentation": uncompressed, "iscrowd": 1},
            {"category_id": 1, "segmentation": [], "bbox": [1, 1, 2, 3]},
        ],
    )
    fmt, (image, empty) = read_detected(path, "auto", "")
    assert fmt == "coco" and empty.filename == "img/empty.jpg" and empty.regions == ()
    shapes = [(r.label, r.shape) for r in image.regions]
    assert shapes == [("car", "polygon"), ("car", "polygon"), ("person", "mask"), ("person", "mask"), ("car", "rect")]
    assert image.regions[0].points == ((0.0, 0.0), (3.0, 0.0), (3.0, 2.0))  # closing vertex dropped
    assert image.regions[1].origin == "instances.json annotation id 1 ring 1"
    decoded = coco_mask.decode({"size": [6, 8], "counts": image.regions[3].geometry["counts"].encode()})
    assert decoded.sum() == 3 * 5 and decoded[2:5, 1:6].all() and image.regions[2].geometry["size"] == [6, 8]
    assert image.regions[4].geometry == {"x": 1.0, "y": 1.0, "width": 2.0, "height": 3.0}
    mask = rasterize_image(image.__class__("a", image.regions[2:3]), 6, 8, ["bg", "car", "person"], 0)
    assert np.array_equal(mask == 2, ring_mask() == 1)


def test_crowd_can_be_ignored(tmp_path):
    path = coco_file(tmp_path, [{"category_id": 1, "iscrowd": 1, "segmentation": [[0, 0, 4, 0, 4, 4]]}])
    assert read_coco(path, crowd="ignore")[0].regions[0].label == "ignore"
    assert read_coco(path)[0].regions[0].label == "car"


@pytest.mark.parametrize(
    ("annotation", "expected", "reason"),
    [
        (
            {"category_id": 1, "segmentation": {"size": [5, 8], "counts": "PP3"}},
            "annotation id 1 (image img/a.jpg): RLE size [5, 8] is not the image's [height, width] [6, 8]",
            "RLE size mismatch",
        ),
        (
            {"category_id": 1, "segmentation": {"size": [6, 8], "counts": [8, 3]}},
            "counts must be whole numbers summing to height * width = 48",
            "bad geometry",
        ),
        (
            {"category_id": 9, "segmentation": [[0, 0, 4, 0, 4, 4]]},
            "category_id 9 is not in 'categories'",
            "unknown category",
        ),
        (
            {"category_id": 1, "image_id": 7, "segmentation": [[0, 0, 4, 0, 4, 4]]},
            "annotation id 1: image_id 7 is not in 'images'",
            "missing image",
        ),
        (
            {"category_id": 1, "segmentation": [[0, 0, 4, 0]]},
            "segmentation[0] is not a flat list of at least 3",
            "bad geometry",
        ),
    ],
)
def test_bad_annotations_name_file_and_id(tmp_path, annotation, expected, reason):
    path = coco_file(tmp_path, [annotation])
    with pytest.raises(AnnotationError) as raised:
        read_coco(path)
    assert "instances.json annotation id 1" in str(raised.value) and expected in str(raised.value)
    drops = Drops(strict=False)  # skipped: counted under its reason, the rest still read
    assert len(read_coco(path, drops=drops)) == 2 and drops.counts == {reason: 1}


def test_truncated_file_names_line_and_column(tmp_path):
    path = coco_file(tmp_path, [{"category_id": 1, "segmentation": [[0, 0, 4, 0, 4, 4]]}])
    path.write_text(path.read_text()[:150])
    with pytest.raises(AnnotationError, match=r"instances\.json line 1 column \d+: not valid JSON .*truncated"):
        read_detected(path, "auto", "")


def test_real_cvat_export_of_via_2label():
    if not VIA_2LABEL_COCO.exists():
        pytest.skip(f"{VIA_2LABEL_COCO} is absent (the shared via-2label dataset)")
    images = read_coco(VIA_2LABEL_COCO)
    assert [image.filename for image in images] == ["birds.jpg", "crack.jpeg", "shapes.jpg", "strawberry.jpg"]
    shapes = Counter((r.label, r.shape) for image in images for r in image.regions)
    # SOURCE.md: 18 bbox-only rectangles, 3 one-ring polygons, 2 uncompressed RLE "ellipse"s.
    assert shapes == {
        ("strawberry", "rect"): 17,
        ("rectangle", "rect"): 1,
        ("bird", "polygon"): 2,
        ("triangle", "polygon"): 1,
        ("ellipse", "mask"): 2,
    }
    assert images[1].regions == ()  # the crack polyline was not exported
    masks = [r for r in images[2].regions if r.shape == "mask"]
    areas = [int(coco_mask.area({"size": r.geometry["size"], "counts": r.geometry["counts"].encode()})) for r in masks]
    assert all(r.geometry["size"] == [643, 588] for r in masks) and min(areas) > 15000
