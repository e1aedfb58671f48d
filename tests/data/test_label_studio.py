"""The Label Studio JSON reader: a real export (made by Label Studio 1.23, see
tests/files/label_studio/NOTE.md) through fetch -> rasterize, image paths, the brush RLE
decoder, and bad input."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import REPO_ROOT

from segflow.config.auto_classes import with_classes_file
from segflow.data.drops import Drops
from segflow.data.fetch import CLASSES_FILE, fetch
from segflow.data.rasterize import rasterize
from segflow.data.readers import detect_format, read_detected
from segflow.data.readers.label_studio import read_label_studio
from segflow.data.readers.label_studio_rle import decode_brush_rle
from segflow.errors import AnnotationError

EXPORT = REPO_ROOT / "tests" / "files" / "label_studio"
#: What make_export.py drew with the brush: a 20x50 block and a disc of radius 8 (197 px);
#: Label Studio's own decoder (label_studio_sdk.converter.brush) also gives 1197.
BRUSH_PIXELS = 20 * 50 + 197


@pytest.fixture
def export(tmp_path) -> Path:
    """A copy of the real export and its images, to edit."""
    folder = tmp_path / "ls"
    shutil.copytree(EXPORT, folder, ignore=shutil.ignore_patterns("*.py", "*.md"))
    return folder


def tasks(folder: Path) -> list[dict]:
    return json.loads((folder / "export.json").read_text())


def write_tasks(folder: Path, data: list[dict]) -> Path:
    path = folder / "export.json"
    path.write_text(json.dumps(data))
    return path


def results(data: list[dict], task: int) -> list[dict]:
    return data[task]["annotations"][0]["result"]


def auto_params(make_params, source: Path, **fetch_settings):
    classes = {"names": "auto", "palette": []}
    return make_params(classes=classes, fetch={"source": str(source), "annotations": "export.json", **fetch_settings})


# --- The real export ---


def test_real_export_through_fetch_and_rasterize(make_params, tmp_path):
    params = auto_params(make_params, EXPORT)
    manifest = fetch(params, tmp_path / "fetch")
    assert manifest.format == "label_studio" and manifest.images == 3
    params = with_classes_file(params, tmp_path / "fetch" / CLASSES_FILE)
    names = params.classes.names
    assert names == ["background", "ball", "car", "grass", "person", "road", "sign"]
    pixels = rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    # Rect 40x30 px at (100, 10): x .. x + width - 1 (see records). Brush: exactly as drawn.
    assert pixels["sign"] == 40 * 30
    assert pixels["grass"] == BRUSH_PIXELS
    assert pixels["person"] == 81 * 81  # a polygon from (40, 20) to (120, 100), edges included
    assert abs(pixels["car"] - 60 * 60 / 2) < 100  # the triangle's area, plus its edge pixels
    assert abs(pixels["ball"] - np.pi * 30 * 20) < 80  # ellipse radii 30 and 20 px
    assert 800 <= pixels["road"] < 900  # a 40x20 rectangle, rotated
    a = cv2.imread(str(tmp_path / "masks" / "a.png"), cv2.IMREAD_UNCHANGED)
    road = names.index("road")
    # Label Studio turns a rectangle about its top-left corner (80, 60), not its centre:
    assert a[79, 92] == road and a[70, 75] == road and a[70, 100] != road
    assert a[20, 20] == names.index("car") and a[25, 120] == names.index("sign")
    b = cv2.imread(str(tmp_path / "masks" / "b.png"), cv2.IMREAD_UNCHANGED)
    assert (b[90:110, 10:60] == names.index("grass")).all() and b[100, 120] == names.index("grass")
    assert b[60, 80] == names.index("ball") and b[60, 115] == 0


def test_detected_and_read_in_task_order():
    fmt, records = read_detected(EXPORT / "export.json", "auto", "label")
    assert fmt == "label_studio" and detect_format(EXPORT / "export.json") == "label_studio"
    assert [r.filename for r in records] == ["a.png", "b.png", "c.png"]  # the 8-hex upload prefix stripped
    assert [(r.label, r.shape) for r in records[0].regions] == [
        ("car", "polygon"),
        ("sign", "rect"),
        ("road", "polygon"),
    ]
    assert [(r.label, r.shape) for r in records[1].regions] == [("ball", "ellipse"), ("grass", "mask")]
    ellipse = records[1].regions[0].geometry
    assert (
        ellipse["cx"] == pytest.approx(80) and ellipse["rx"] == pytest.approx(30) and ellipse["ry"] == pytest.approx(20)
    )


# --- The brush RLE ---


def test_brush_decoder_gives_the_drawn_mask():
    value = results(tasks(EXPORT), 1)[1]["value"]
    mask = decode_brush_rle(value["rle"], 120, 160, "here")
    assert mask.shape == (120, 160) and mask.sum() == BRUSH_PIXELS
    assert mask[90:110, 10:60].all() and mask[100, 120] and not mask[0, 0]


@pytest.mark.parametrize(
    "rle, height, fragment",
    [
        ("abc", 120, "not a list of bytes"),
        ([0, 1, 300], 120, "not a list of bytes"),
        ("cut", 120, "ends early"),
        ("full", 60, "needs 38400"),
    ],
)
def test_brush_decoder_refuses_bad_rle(rle, height, fragment):
    real = results(tasks(EXPORT), 1)[1]["value"]["rle"]
    rle = {"cut": real[: len(real) // 2], "full": real}.get(rle, rle) if isinstance(rle, str) else rle
    with pytest.raises(AnnotationError, match=fragment) as raised:
        decode_brush_rle(rle, height, 160, "export.json task id 5 result 'r5'")
    assert "task id 5" in str(raised.value)


# --- Image paths ---


def test_image_paths_resolve_exact_name_first_then_without_hash_and_local_files(export):
    data = tasks(export)
    (export / "sub").mkdir()
    shutil.copy(export / "c.png", export / "sub" / "deep.png")
    shutil.copy(export / "b.png", export / "4dfeea26-b.png")  # the exact upload name wins
    data[1]["data"]["image"] = "/data/upload/2/4dfeea26-b.png"
    data[2]["data"] = {"picture": "/data/local-files/?d=sub/deep.png"}  # the one string value
    records = read_label_studio(write_tasks(export, data))
    assert [r.filename for r in records] == ["a.png", "4dfeea26-b.png", "sub/deep.png"]


@pytest.mark.parametrize(
    "case, fragments",
    [
        ("missing", ["task id 4", "'/data/upload/2/f3a1fcd5-zz.png'", "'zz.png'"]),
        ("ambiguous", ["task id 4", "matches 2 files"]),
        ("no image key", ["task id 4", "which 'data' value is the image"]),
    ],
)
def test_image_path_errors_name_the_task(case, fragments, export):
    data = tasks(export)
    if case == "missing":
        data[0]["data"]["image"] = "/data/upload/2/f3a1fcd5-zz.png"
    elif case == "ambiguous":
        for folder in ("x", "y"):  # a.png only in two sub-folders
            (export / folder).mkdir()
            shutil.copy(export / "a.png", export / folder / "a.png")
        (export / "a.png").unlink()
    else:
        data[0]["data"] = {"first": "/a.png", "second": "/b.png"}
    path = write_tasks(export, data)
    with pytest.raises(AnnotationError) as raised:
        read_label_studio(path)
    for fragment in [str(path), *fragments]:
        assert fragment in str(raised.value)


# --- Annotations ---


def test_choice_of_annotation_and_unannotated_tasks(export):
    data = tasks(export)
    first = data[0]["annotations"][0]
    data[0]["annotations"] = [first, {**copy.deepcopy(first), "id": 99, "result": results(data, 0)[:1]}]
    data[1]["annotations"] = [{**data[1]["annotations"][0], "was_cancelled": True}]  # skipped
    data[2]["annotations"] = []
    drops = Drops(strict=True)
    records = read_label_studio(write_tasks(export, data), drops=drops)
    assert [r.filename for r in records] == ["a.png"] and len(records[0].regions) == 1  # the newest
    assert drops.counts["not annotated"] == 2
    data[0]["annotations"][0]["ground_truth"] = True
    assert len(read_label_studio(write_tasks(export, data))[0].regions) == 3  # ground truth wins


def test_shape_types_with_a_separate_labels_result(export):
    data = tasks(export)
    polygon = results(data, 2)[0]
    value = {k: v for k, v in polygon["value"].items() if k != "polygonlabels"}
    labels = {**polygon, "type": "labels", "value": {"labels": ["person"]}}
    choice = {"id": "c1", "type": "choices", "value": {"choices": ["day"]}}
    data[2]["annotations"][0]["result"] = [{**polygon, "type": "polygon", "value": value}, labels, choice]
    record = read_label_studio(write_tasks(export, data))[2]
    assert [(r.label, r.shape) for r in record.regions] == [("person", "polygon")]


BAD_RESULTS = {
    "no size": (lambda r: r.pop("original_width"), "original_width"),
    "bad point": (lambda r: r["value"]["points"][1].__setitem__(0, "x"), "points[1][0]"),
    "two labels": (lambda r: r["value"].__setitem__("polygonlabels", ["car", "person"]), "needs one label"),
    "two points": (lambda r: r["value"].__setitem__("points", [[1, 1], [2, 2]]), "2 points"),
}


@pytest.mark.parametrize("case", sorted(BAD_RESULTS))
def test_bad_results_name_file_task_and_result_and_leave_nothing(case, export, make_params, tmp_path):
    data = tasks(export)
    change, fragment = BAD_RESULTS[case]
    change(results(data, 0)[0])
    path = write_tasks(export, data)
    out = tmp_path / "artifacts" / "fetch"
    with pytest.raises(AnnotationError) as raised:
        fetch(auto_params(make_params, export), out)
    for part in [str(path), "task id 4", "result 'r1'", fragment]:
        assert part in str(raised.value)
    assert not out.exists() and list(out.parent.iterdir()) == []
    drops = Drops(strict=False)
    assert len(read_label_studio(path, drops=drops)[0].regions) == 2 and sum(drops.counts.values()) == 1


def test_not_a_task_list_is_refused(tmp_path):
    path = tmp_path / "min.json"
    path.write_text(json.dumps([{"image": "/data/upload/1/a.png", "label": []}]))  # JSON_MIN
    with pytest.raises(AnnotationError, match="Label Studio JSON export"):
        detect_format(path)
    with pytest.raises(AnnotationError, match="not JSON_MIN"):
        read_label_studio(path)
