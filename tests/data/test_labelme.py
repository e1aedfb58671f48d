"""LabelMe JSON: every shape type, embedded images, and labelme's own VOC masks as reference."""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import SHARED_DATASETS, png_bomb, write_image
from PIL import Image
from pycocotools import mask as coco_mask

from segflow.data.fetch import fetch
from segflow.data.rasterize import rasterize
from segflow.data.readers import read_detected
from segflow.data.readers.labelme import read_labelme
from segflow.errors import AnnotationError

EXAMPLES = SHARED_DATASETS / "labelme-examples" / "examples"
VIA_2LABEL = SHARED_DATASETS / "via-2label" / "HEAD" / "datasets" / "labelme"


def shape(kind: str, points: list, label: str = "car", **extra) -> dict:
    return {"label": label, "points": points, "group_id": None, "shape_type": kind, "flags": {}, **extra}


def labelme_file(path: Path, shapes: list[dict], image_path: str = "a.jpg", image_data: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "version": "5.2.1",
                "flags": {},
                "shapes": shapes,
                "imagePath": image_path,
                "imageData": image_data,
                "imageHeight": 30,
                "imageWidth": 40,
            }
        )
    )
    return path


def test_every_shape_type(tmp_path):
    bitmap = np.zeros((3, 4), np.uint8)
    bitmap[1, 1:3] = 255
    png = base64.b64encode(cv2.imencode(".png", bitmap)[1].tobytes()).decode()
    path = labelme_file(
        tmp_path / "a.json",
        [
            shape("polygon", [[1, 1], [9, 1], [9, 9], [1, 1]]),
            shape("rectangle", [[10, 12], [4, 2]]),
            shape("circle", [[20, 20], [23, 24]]),
            shape("line", [[0, 0], [5, 5]]),
            shape("linestrip", [[0, 0], [5, 5], [9, 0]]),
            shape("point", [[3, 4]]),
            shape("mask", [[10.7, 20.2], [13.9, 22.5]], mask=png),
            {"label": "old", "points": [[0, 0], [4, 0], [4, 4]]},  # LabelMe < 3 wrote no shape_type
        ],
    )
    [image] = read_labelme(path)
    assert [r.shape for r in image.regions] == [
        "polygon",
        "rect",
        "circle",
        "polyline",
        "polyline",
        "point",
        "mask",
        "polygon",
    ]
    polygon, rect, circle = image.regions[:3]
    assert polygon.points == ((1.0, 1.0), (9.0, 1.0), (9.0, 9.0))
    assert rect.geometry == {"x": 4.0, "y": 2.0, "width": 6.0, "height": 10.0}
    assert circle.geometry == {"cx": 20.0, "cy": 20.0, "r": 5.0}
    decoded = coco_mask.decode({"size": [30, 40], "counts": image.regions[6].geometry["counts"].encode()})
    assert decoded.sum() == 2 and decoded[21, 11] and decoded[21, 12]  # placed at int(corner) + (1, 1)
    assert image.origin == "a.json" and image.regions[3].origin == "a.json shape 3"


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        (shape("ellipse", [[0, 0], [3, 3]]), "unknown shape_type 'ellipse'; known shape types are ['polygon'"),
        (shape("circle", [[0, 0]]), "circle has 1 points, needs 2"),
        (shape("polygon", [[0, 0], [1, "x"], [2, 2]]), "points[1][1] is 'x', not a number"),
        (shape("polygon", [[0, 0], [1, 1], [2, 2]], label=7), "label is 7, not a label"),
    ],
)
def test_bad_shapes_name_file_and_shape(tmp_path, bad, expected):
    path = labelme_file(tmp_path / "a.json", [shape("point", [[1, 1]]), bad])
    with pytest.raises(AnnotationError) as raised:
        read_labelme(path)
    assert "a.json shape 1" in str(raised.value) and expected in str(raised.value)


def test_folder_windows_paths_and_embedded_image(tmp_path, make_params):
    source = tmp_path / "data"
    write_image(source / "images" / "a.jpg")
    labelme_file(source / "json" / "a.json", [shape("polygon", [[1, 1], [9, 1], [9, 9]])], "..\\images\\a.jpg")
    embedded = base64.b64encode((source / "images" / "a.jpg").read_bytes()).decode()
    labelme_file(source / "json" / "sub" / "b.json", [shape("rectangle", [[0, 0], [5, 5]])], "b.jpg", embedded)
    fmt, records = read_detected(source / "json", "auto", "")
    assert fmt == "labelme" and [r.filename for r in records] == ["../images/a.jpg", "sub/b.jpg"]
    assert records[0].image_data == "" and records[1].image_data == embedded  # b.jpg is absent
    params = make_params(fetch={"source": str(source), "annotations": "json"}, classes={"label_map": {"*": "car"}})
    manifest = fetch(params, tmp_path / "fetch")
    assert [f.filename for f in manifest.files] == ["images/a.jpg", "json/sub/b.jpg"]
    assert (tmp_path / "fetch/images/json/sub/b.jpg").read_bytes() == (source / "images/a.jpg").read_bytes()
    saved = json.loads((tmp_path / "fetch/annotations.json").read_text())
    assert "image_data" not in saved["images"][1]


def voc_reference(kind: str) -> tuple[list[str], Path, Path]:
    root = EXAMPLES / kind
    if not root.exists():
        pytest.skip(f"{root} is absent (the shared labelme-examples dataset)")
    names = (root / "data_dataset_voc" / "class_names.txt").read_text().splitlines()  # "potted plant"
    return names, root / "data_annotated", root / "data_dataset_voc" / "SegmentationClass"


@pytest.mark.parametrize("kind", ["semantic_segmentation", "instance_segmentation"])
def test_fetch_and_rasterize_match_labelme2voc(kind, make_params, tmp_path):
    names, annotated, voc = voc_reference(kind)
    params = make_params(
        classes={"names": names, "label_map": {"__ignore__": "ignore"}, "palette": []},
        fetch={"source": str(annotated), "annotations": "."},
        rasterize={"unlabeled": "_background_"},
    )
    manifest = fetch(params, tmp_path / "fetch")
    assert manifest.format == "labelme" and manifest.images == 3
    rasterize(params, tmp_path / "fetch", tmp_path / "masks")  # fill: auto -> pil for LabelMe
    differing = total = 0
    for entry in manifest.files:
        name = Path(entry.filename).with_suffix(".png")
        mask = cv2.imread(str(tmp_path / "masks" / name), cv2.IMREAD_UNCHANGED)
        reference = np.asarray(Image.open(voc / name))  # paletted: PIL gives the indices
        differing, total = differing + int((mask != reference).sum()), total + reference.size
        if name.stem == "2011_000006":
            # The one pixel: (104, 290) sits under a vertex of a sofa polygon at (103.94, 290.56);
            # the Pillow labelme2voc ran with painted it, Pillow 13 does not.
            assert list(zip(*np.nonzero(mask != reference))) == [(290, 104)]
    assert total == 544_000 and differing == 1  # 99.9998 % agree
    opencv = make_params(
        **{**params.model_dump(mode="json"), "rasterize": {"unlabeled": "_background_", "fill": "opencv"}}
    )
    rasterize(opencv, tmp_path / "fetch", tmp_path / "cv")  # the other rule, for comparison
    cv_differing = sum(
        int(
            (
                cv2.imread(str(tmp_path / "cv" / Path(e.filename).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
                != np.asarray(Image.open(voc / Path(e.filename).with_suffix(".png")))
            ).sum()
        )
        for e in manifest.files
    )
    assert 4000 < cv_differing < 7000  # ~1.1 % of pixels, all along polygon edges


def test_primitives_and_via_2label_exports():
    primitives = EXAMPLES / "primitives" / "primitives.json"
    if not primitives.exists() or not VIA_2LABEL.exists():
        pytest.skip("the shared labelme-examples or via-2label dataset is absent")
    [image] = read_labelme(primitives)
    assert [r.shape for r in image.regions] == [
        "rect",
        "circle",
        "rect",
        "polygon",
        "polyline",
        "point",
        "polyline",
        "mask",
    ]
    octagon = image.regions[-1].geometry
    assert octagon["size"] == [450, 560]
    assert 5000 < coco_mask.area({"size": [450, 560], "counts": octagon["counts"].encode()}) <= 100 * 100
    records = read_labelme(VIA_2LABEL)
    shapes = Counter(r.shape for record in records for r in record.regions)
    assert shapes == {"rect": 18, "polygon": 4, "circle": 1, "polyline": 2}  # SOURCE.md's 25 shapes
    assert all(record.image_data == "" for record in records)  # the images sit beside the JSON


def test_a_shape_without_a_label_reads_as_unlabeled(tmp_path):
    path = labelme_file(tmp_path / "a.json", [shape("polygon", [[0, 0], [5, 0], [5, 5]], label="  ")])
    [image] = read_labelme(path)
    assert image.regions[0].label == ""  # fetch gives it fetch.default_label


def test_a_bomb_mask_bitmap_is_refused_from_its_header(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png", 20_000, 10_000)  # 200 MP of zeros, 0.6 GB decoded
    path = labelme_file(
        tmp_path / "a.json",
        [shape("mask", [[0, 0], [19_999, 9_999]], mask=base64.b64encode(bomb.read_bytes()).decode())],
    )
    with pytest.raises(AnnotationError) as raised:
        read_labelme(path)
    assert "a.json shape 0: 'mask': the image is 200,000,000 pixels" in str(raised.value)
    assert "over the limit of 100,000,000 (fetch.max_pixels)" in str(raised.value)
    assert raised.value.reason == "too many pixels"
