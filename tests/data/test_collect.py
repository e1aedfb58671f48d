"""Several annotation files, canonical names, folder splits and unlabeled regions, through fetch
(segflow.data.collect), and the balloon layout from fetch to preprocess on the real files."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from helpers import SHARED_DATASETS, VIA_HEADER, via_row, write_image

from segflow.data.collect import annotation_paths, collect, folder_split
from segflow.data.drops import Drops
from segflow.data.fetch import fetch
from segflow.data.preprocess import preprocess
from segflow.data.rasterize import mask_name, rasterize
from segflow.errors import AnnotationError, ConfigError
from segflow.prepared import entries, read_scaled

BALLOON = SHARED_DATASETS / "via-heads-balloon"
RECT = '{"name":"rect","x":0,"y":0,"width":10,"height":10}'
SMALL = '{"name":"rect","x":20,"y":10,"width":5,"height":5}'


def via_json(path, entries: dict[str, list[dict]]) -> None:
    """A VIA 1.x JSON export (regions as a dict keyed by id) with empty region_attributes."""
    payload = {
        f"{name}100": {
            "filename": name,
            "size": 100,
            "regions": {str(i): {"shape_attributes": shape, "region_attributes": {}} for i, shape in enumerate(shapes)},
            "file_attributes": {},
        }
        for name, shapes in entries.items()
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


@pytest.fixture
def split_folders(tmp_path):
    """The balloon layout in small: Train/ and val/ each with its JSON and the same names 1.jpg, 2.jpg."""
    source = tmp_path / "data"
    rect = {"name": "rect", "x": 0, "y": 0, "width": 10, "height": 10}
    for folder, value in (("Train", 40), ("val", 200)):
        for name in ("1.jpg", "2.jpg"):
            write_image(source / folder / name, value=value)
        via_json(source / folder / "via_region_data.json", {"1.jpg": [rect], "2.jpg": [rect]})
    return source


def test_folder_split_names():
    assert folder_split("Train") == "train" and folder_split("a/VALID/b") == "val" and folder_split("testing") == "test"
    assert folder_split("val/extra/test") == "test"  # the innermost wins
    assert folder_split("images") == "" and folder_split("") == "" and folder_split("contest") == ""


def test_annotation_paths_expand_globs_in_order(split_folders):
    paths = annotation_paths(split_folders, [split_folders / "val/via_region_data.json", "*/via_region_data.json"])
    assert [p.relative_to(split_folders).as_posix() for p in paths] == [
        "val/via_region_data.json",
        "Train/via_region_data.json",
    ]
    with pytest.raises(AnnotationError, match=r"no file matches the fetch.annotations pattern '\*/\*.csv'"):
        annotation_paths(split_folders, ["*/*.csv"])
    with pytest.raises(AnnotationError, match="annotation file not found"):
        annotation_paths(split_folders, ["Train/nope.json"])


def test_split_folders_keep_same_names_apart_and_their_split(split_folders, make_params, tmp_path):
    params = make_params(
        fetch={"source": str(split_folders), "annotations": ["*/via_region_data.json"], "default_label": "car"}
    )
    manifest = fetch(params, tmp_path / "fetch")
    assert sorted(entry.filename for entry in manifest.files) == [
        "Train/1.jpg",
        "Train/2.jpg",
        "val/1.jpg",
        "val/2.jpg",
    ]
    assert manifest.annotation_files == ["Train/via_region_data.json", "val/via_region_data.json"]
    records = json.loads((tmp_path / "fetch" / "annotations.json").read_text())["images"]
    assert {r["filename"]: r["split"] for r in records} == {
        "Train/1.jpg": "train",
        "Train/2.jpg": "train",
        "val/1.jpg": "val",
        "val/2.jpg": "val",
    }
    # two files share the name via_region_data.json: origins say which
    assert records[2]["regions"][0]["origin"] == "val/via_region_data.json image '1.jpg' region 0"
    report = json.loads((tmp_path / "fetch" / "report.json").read_text())
    assert report["unlabeled_regions"]["count"] == 4 and report["unlabeled_regions"]["class"] == "car"
    assert report["classes"]["car"]["instances"] == 4 and report["folder_splits"] == {"train": 2, "val": 2}


def test_a_region_without_a_label_needs_default_label(split_folders, make_params, tmp_path):
    params = make_params(fetch={"source": str(split_folders), "annotations": "val/via_region_data.json"})
    out = tmp_path / "artifacts" / "fetch"
    with pytest.raises(AnnotationError) as raised:
        fetch(params, out)
    message = str(raised.value)
    assert "via_region_data.json image '1.jpg' region 0: the region has no label" in message
    assert (
        "set fetch.default_label" in message and "['background', 'sky', 'building', 'road', 'car', 'person']" in message
    )
    assert not out.exists() and list(out.parent.iterdir()) == []
    skipped = make_params(
        fetch={"source": str(split_folders), "annotations": "val/via_region_data.json", "bad_records": "skip"}
    )
    assert fetch(skipped, tmp_path / "skipped").regions == 0  # bad_records: skip drops them, counted
    report = json.loads((tmp_path / "skipped" / "report.json").read_text())
    assert report["dropped"]["counts"] == {"no label": 2}
    with pytest.raises(ConfigError, match="fetch.default_label is 'balloon', not a class; choose one of classes.names"):
        fetch(make_params(fetch={"source": str(split_folders), "default_label": "balloon"}), out)


def test_an_image_in_two_files_gets_the_regions_of_both_in_file_order(tmp_path, make_params):
    source = tmp_path / "data"
    write_image(source / "a.jpg")
    write_image(source / "b.jpg", value=50)
    (source / "batch1.csv").write_text(
        "\n".join([VIA_HEADER, via_row("a.jpg", 1, 0, RECT, '{"label":"car"}'), via_row("b.jpg", 0, 0, "{}", "{}")])
    )
    (source / "batch2.csv").write_text("\n".join([VIA_HEADER, via_row("a.jpg", 1, 0, SMALL, '{"label":"road"}')]))
    params = make_params(fetch={"source": str(source), "annotations": ["batch2.csv", "batch1.csv"]})
    manifest = fetch(params, tmp_path / "fetch")
    records = json.loads((tmp_path / "fetch" / "annotations.json").read_text())["images"]
    assert [r["filename"] for r in records] == ["a.jpg", "b.jpg"]
    assert [(r["label"], r["origin"]) for r in records[0]["regions"]] == [
        ("road", "batch2.csv row 2"),
        ("car", "batch1.csv row 2"),
    ]
    assert manifest.format == "via_csv" and manifest.regions == 2
    report = json.loads((tmp_path / "fetch" / "report.json").read_text())
    assert report["merged_images"]["count"] == 1
    assert report["merged_images"]["examples"] == ["a.jpg: 1 regions from batch1.csv row 2 added"]


def test_a_list_may_mix_formats(tmp_path, make_params):
    source = tmp_path / "data"
    write_image(source / "a.jpg")
    write_image(source / "b.jpg", value=50)
    (source / "a.csv").write_text("\n".join([VIA_HEADER, via_row("a.jpg", 1, 0, RECT, '{"label":"car"}')]))
    labelme = {"shapes": [{"label": "road", "points": [[0, 0], [9, 0], [9, 9]], "shape_type": "polygon"}]}
    (source / "b.json").write_text(json.dumps({**labelme, "imagePath": "b.jpg", "imageHeight": 30, "imageWidth": 40}))
    manifest = fetch(make_params(fetch={"source": str(source), "annotations": ["a.csv", "b.json"]}), tmp_path / "f")
    assert manifest.format == "via_csv+labelme" and manifest.regions_per_class["road"] == 1


def test_balloon_layout_fetch_rasterize_preprocess(make_params, tmp_path, caplog):
    """The "balloon" layout as published: train/ and val/ each with a via_region_data.json, one
    unnamed class, train drawn as polylines (20 of 31 open), the same names 1.jpg..5.jpg in both."""
    if not BALLOON.is_dir():
        pytest.skip(f"{BALLOON} is absent (the shared via-heads-balloon dataset)")
    params = make_params(
        classes={"names": ["background", "head"], "palette": []},
        fetch={"source": str(BALLOON), "annotations": ["*/via_region_data.json"], "default_label": "head"},
        rasterize={"fill_outlines": True},
        preprocess={"image_size": 64},
    )
    manifest = fetch(params, tmp_path / "fetch")
    assert manifest.images == 36 and manifest.regions_per_class == {"background": 0, "head": 36}
    names = {entry.filename for entry in manifest.files}
    assert {f"train/{n}.jpg" for n in range(1, 6)} | {f"val/{n}.jpg" for n in range(1, 6)} <= names
    with caplog.at_level(logging.INFO, logger="segflow"):
        rasterize(params, tmp_path / "fetch", tmp_path / "masks", report_dir=tmp_path / "report")
    assert "31 polylines trace an outline: filled as polygons" in caplog.text
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["dropped"]["counts"] == {} and report["unlabeled_regions"]["count"] == 36
    for name in names:  # every mask has its head: no outline left unfilled
        mask = cv2.imread(str(tmp_path / "masks" / mask_name(name)), cv2.IMREAD_UNCHANGED)
        assert (mask == 1).sum() > 0.02 * mask.size, name
    with caplog.at_level(logging.INFO, logger="segflow"):
        counts = preprocess(params, tmp_path / "fetch", tmp_path / "masks", tmp_path / "pre")
    split = json.loads((tmp_path / "pre" / "split.json").read_text())
    assert sorted(e["filename"] for e in split["val"]) == sorted(f"val/{n}.jpg" for n in range(1, 6))  # kept
    assert all(e["filename"].startswith("train/") for e in split["train"] + split["test"])
    # test carved from train: round(34 groups * 0.15) = 5 groups, one a pair of near duplicates
    # (the two recoloured copies, grouped by default), so 6 images
    assert counts == {"train": 25, "val": 5, "test": 6}
    assert "no test folder: 6 of 31 training images carved as the test split" in caplog.text
    masks = [np.asarray(read_scaled(tmp_path / "pre", e)[1]) for e in entries(tmp_path / "pre", "train")]
    assert all((m == 1).any() for m in masks)


def test_balloon_read_with_one_file_names_the_other_splits_images_and_the_fix(make_params):
    """Read with train/'s JSON alone, the 5 val/ images are covered by no file: counted, named,
    and the warning says which file beside them to add to fetch.annotations."""
    if not BALLOON.is_dir():
        pytest.skip(f"{BALLOON} is absent (the shared via-heads-balloon dataset)")
    one = make_params(fetch={"source": str(BALLOON), "annotations": "train/via_region_data.json"}).fetch
    collected = collect(BALLOON, one, Drops())
    assert len(collected.records) == 31
    assert collected.uncovered == [f"val/{n}.jpg" for n in range(1, 6)]
    assert collected.unread == ["val/via_region_data.json"]
    both = make_params(fetch={"source": str(BALLOON), "annotations": ["*/via_region_data.json"]}).fetch
    assert collect(BALLOON, both, Drops()).uncovered == []


def test_uncovered_images_are_counted_in_the_report_with_a_warning(split_folders, make_params, tmp_path, caplog):
    for n in range(3, 10):  # 7 images in val/ that its JSON does not name
        write_image(split_folders / "val" / f"{n}.jpg", value=n * 20)
    settings = {"source": str(split_folders), "annotations": "Train/via_region_data.json", "default_label": "car"}
    fetch(make_params(fetch=settings), tmp_path / "fetch")
    report = json.loads((tmp_path / "fetch" / "report.json").read_text())
    assert report["images"] == 2 and report["uncovered_images"]["count"] == 9
    assert report["uncovered_images"]["examples"] == ["val/1.jpg", "val/2.jpg", "val/3.jpg", "val/4.jpg", "val/5.jpg"]
    assert report["uncovered_images"]["unread_annotations"] == ["val/via_region_data.json"]
    warning = " ".join(caplog.text.split())
    assert "9 images in" in warning and "val/1.jpg, val/2.jpg, val/3.jpg, val/4.jpg, val/5.jpg and 4 more" in warning
    assert "set fetch.annotations to ['Train/via_region_data.json', 'val/via_region_data.json']" in warning
    assert "or remove the images from the source" in warning
