"""Cityscapes: the official label table, the polygons reader, and fetch -> rasterize
reproducing cityscapesscripts' json2labelImg (trainIds) pixel for pixel."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels, name2label
from cityscapesscripts.preparation.json2labelImg import json2labelImg
from helpers import SHARED_DATASETS, write_cityscapes

from segflow.cityscapes_labels import TRAIN_CLASSES, official_label, preset, train_id_lut
from segflow.config import ClassesParams
from segflow.data.fetch import fetch
from segflow.data.images import read_rgb
from segflow.data.rasterize import rasterize
from segflow.data.readers import read_detected
from segflow.data.readers.cityscapes import read_cityscapes
from segflow.errors import AnnotationError

PSEUDO = SHARED_DATASETS / "cityscapes-mmseg-pseudo" / "tests" / "data" / "pseudo_cityscapes_dataset"


def cityscapes_params(make_params, source: Path, **fetch):
    return make_params(
        classes={"names": None, "label_map": {}, "palette": [], "preset": "cityscapes"},
        fetch={"source": str(source), "annotations": ".", **fetch},
        rasterize={"unlabeled": "ignore"},
    )


def test_preset_is_the_official_table():
    assert len(TRAIN_CLASSES) == 19 and TRAIN_CLASSES[0] == "road" and TRAIN_CLASSES[-1] == "bicycle"
    assert [name2label[name].trainId for name in TRAIN_CLASSES] == list(range(19))
    table = preset()
    for label in labels:  # ignored in evaluation <=> painted as ignore
        assert (table["label_map"].get(label.name) == "ignore") == label.ignoreInEval
    assert table["label_map"]["out of roi"] == "ignore"
    classes = ClassesParams.model_validate({"preset": "cityscapes", "label_map": {"rider": "person"}})
    assert classes.names == list(TRAIN_CLASSES) and classes.palette[0] == (128, 64, 128)
    assert classes.class_of("rider") == "person" and classes.class_of("polegroup") == "ignore"
    assert official_label("cargroup") == "car" and official_label("polegroup") == "polegroup"
    # as json2labelImg (not assureSingleInstanceName): any known label + "group"
    assert official_label("skygroup") == "sky" and official_label("spaceship") is None


def test_label_ids_map_to_train_ids_through_the_official_table():
    label_ids = PSEUDO / "gtFine/val/frankfurt/frankfurt_000000_000294_gtFine_labelIds.png"
    if not label_ids.exists():
        pytest.skip(f"{PSEUDO} is absent (the shared cityscapes-mmseg-pseudo dataset)")
    ids = cv2.imread(str(label_ids), cv2.IMREAD_UNCHANGED)
    expected = cv2.imread(str(label_ids).replace("_labelIds", "_labelTrainIds"), cv2.IMREAD_UNCHANGED)
    mapped = train_id_lut()[ids]
    # SOURCE.md: labelTrainIds was downscaled on its own, so 77 of 32768 pixels disagree.
    assert ids.shape == (128, 256) and (mapped != expected).sum() == 77
    assert set(np.unique(mapped)) == {0, 1, 2, 4, 5, 7, 8, 10, 11, 13, 255}
    instances = cv2.imread(str(label_ids).replace("_labelIds", "_instanceIds"), cv2.IMREAD_UNCHANGED)
    things = instances >= 1000  # person and car instances: label id * 1000 + index
    assert np.array_equal(instances[things] // 1000, ids[things]) and set(np.unique(ids[things])) == {24, 26}
    image = PSEUDO / "leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    assert read_rgb(image).shape == (128, 256, 3)  # the layout fetch expects beside gtFine/


def test_pseudo_dataset_has_no_polygons_and_says_so():
    if not PSEUDO.exists():
        pytest.skip(f"{PSEUDO} is absent (the shared cityscapes-mmseg-pseudo dataset)")
    with pytest.raises(AnnotationError, match=r"no gtFine/<split>/<city>/\*_gtFine_polygons\.json"):
        read_detected(PSEUDO, "auto", "")


def test_reader_follows_json2labelimg_label_rules(tmp_path):
    write_cityscapes(tmp_path, frames=1, objects=12, images=False)
    [record] = read_cityscapes(tmp_path)
    assert record.filename == "leftImg8bit/val/testcity/testcity_000000_000019_leftImg8bit.png"
    assert record.split == "val" and record.origin == "gtFine/val/testcity/testcity_000000_000019_gtFine_polygons.json"
    labels_read = [region.label for region in record.regions]
    assert "car" in labels_read and "cargroup" not in labels_read and "polegroup" in labels_read
    assert "license plate" not in labels_read and len(labels_read) == 12 - 2  # deleted, plate
    assert record.regions[0].origin.endswith("object 0")
    [path] = sorted(tmp_path.glob("gtFine/*/*/*.json"))
    fmt, [alone] = read_detected(path, "auto", "")  # one file: sniffed by its keys
    assert fmt == "cityscapes" and alone.split == "val"
    assert [(r.label, r.points) for r in alone.regions] == [(r.label, r.points) for r in record.regions]
    assert alone.filename == "../../../" + record.filename  # relative to the file's folder


def test_unknown_label_names_file_and_object(tmp_path):
    path = write_cityscapes(tmp_path, frames=1, images=False)[0]
    data = json.loads(path.read_text())
    data["objects"][3]["label"] = "spaceship"
    path.write_text(json.dumps(data))
    with pytest.raises(
        AnnotationError,
        match=r"polygons\.json object 3: label 'spaceship' is not in "
        r"the Cityscapes label table",
    ):
        read_cityscapes(tmp_path)


def test_fetch_and_rasterize_reproduce_official_train_ids(tmp_path, make_params):
    source = tmp_path / "cityscapes"
    polygons = write_cityscapes(source, frames=2, split="train") + write_cityscapes(source, frames=1, seed=1)
    params = cityscapes_params(make_params, source)
    manifest = fetch(params, tmp_path / "fetch")
    assert manifest.format == "cityscapes" and manifest.images == 3
    records = json.loads((tmp_path / "fetch" / "annotations.json").read_text())["images"]
    assert [r["split"] for r in records] == ["train", "train", "val"]  # Cityscapes' own split
    rasterize(params, tmp_path / "fetch", tmp_path / "masks", report_dir=tmp_path / "report")
    for path in polygons:
        official = tmp_path / "official.png"
        json2labelImg(str(path), str(official), "trainIds")
        expected = cv2.imread(str(official), cv2.IMREAD_UNCHANGED)
        split, city = path.parent.parent.name, path.parent.name
        name = path.name.replace("_gtFine_polygons.json", "_leftImg8bit.png")
        mask = cv2.imread(str(tmp_path / "masks/leftImg8bit" / split / city / name), cv2.IMREAD_UNCHANGED)
        assert mask.shape == expected.shape and np.array_equal(mask, expected)
        assert len(np.unique(expected)) >= 4  # several classes and ignore: a real comparison
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["dropped"]["counts"] == {"deleted object": 3, "negative Cityscapes id": 3}
    assert report["clipped"]["count"] > 0 and report["classes"]["car"]["instances"] > 0
