"""Tests for segflow.data.readers.via and the format dispatch in segflow.data.readers."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import SHARED_DATASETS

from segflow.data.collect import check_sizes
from segflow.data.fetch import fetch
from segflow.data.readers import FORMATS, read_annotation_file
from segflow.data.readers.via import CSV_COLUMNS, read_via_csv, read_via_json
from segflow.data.records import ImageAnnotation
from segflow.errors import AnnotationError

DATASET = SHARED_DATASETS / "via-2label"

Cell = Any  # a dict (written as JSON) or a raw string (written as is, to test bad JSON)


def write_csv(path: Path, rows: list[tuple[str, Cell, Cell]], header: str = "") -> Path:
    """Write a VIA CSV export: one (filename, shape, attributes) tuple per row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    counts = Counter(filename for filename, shape, _ in rows if shape != {})
    seen: Counter[str] = Counter()
    buffer.write((header or ",".join(CSV_COLUMNS)) + "\n")
    for filename, shape, attributes in rows:
        cells = [c if isinstance(c, str) else json.dumps(c) for c in (shape, attributes)]
        writer.writerow([filename, 1234, "{}", counts[filename], seen[filename], *cells])
        seen[filename] += 1
    path.write_text(buffer.getvalue())
    return path


def write_json(path: Path, payload: Any) -> Path:
    path.write_text(json.dumps(payload, indent=1))
    return path


def rect(x: int = 1, y: int = 2, width: int = 3, height: int = 4) -> dict[str, Any]:
    return {"name": "rect", "x": x, "y": y, "width": width, "height": height}


def polygon(xs: list[Any], ys: list[Any], name: str = "polygon") -> dict[str, Any]:
    return {"name": name, "all_points_x": xs, "all_points_y": ys}


def label(value: Any, key: str = "label") -> dict[str, Any]:
    return {key: value}


def strip_origins(images: list[ImageAnnotation]) -> list[tuple[Any, ...]]:
    return [(image.filename, [(r.label, r.shape, r.points, r.geometry) for r in image.regions]) for image in images]


# --- CSV ---------------------------------------------------------------------------


def test_csv_reads_every_shape_with_exact_values(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "via.csv",
        [
            ("a.jpg", polygon([10, 20, 30, 10], [5, 6.5, 7, 5]), label(" car ")),  # closed ring
            ("a.jpg", rect(1, 2, 3, 4), label({"bus": True, "car": False})),
            ("empty.jpg", {}, {}),
            ("b.jpg", {"name": "circle", "cx": 5, "cy": 6, "r": 7}, label("c")),
            ("b.jpg", {"name": "ellipse", "cx": 1, "cy": 2, "rx": 3, "ry": 4}, label("e")),
            ("b.jpg", {"name": "ellipse", "cx": 1, "cy": 2, "rx": 3, "ry": 4, "theta": 0.5}, label("e")),
            ("b.jpg", {"name": "point", "cx": 8, "cy": 9}, label("p")),
            ("b.jpg", polygon([0, 4], [0, 3], name="polyline"), label("l")),
            ("a.jpg", rect(9, 9, 9, 9), label("late")),  # same image again: joins a.jpg
        ],
    )
    images = read_via_csv(path, "label")

    assert [image.filename for image in images] == ["a.jpg", "empty.jpg", "b.jpg"]
    assert [len(image.regions) for image in images] == [3, 0, 5]
    a, empty, b = images
    assert a.origin == "via.csv row 2" and empty.origin == "via.csv row 4"
    assert a.regions[0].shape == "polygon"
    assert a.regions[0].points == ((10.0, 5.0), (20.0, 6.5), (30.0, 7.0))
    assert a.regions[0].label == "car"
    assert a.regions[0].origin == "via.csv row 2"
    assert a.regions[1].geometry == {"x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0}
    assert a.regions[1].label == "bus" and a.regions[1].points == ()
    assert a.regions[2].label == "late" and a.regions[2].origin == "via.csv row 10"
    circle, ellipse, rotated, point, line = b.regions
    assert circle.geometry == {"cx": 5.0, "cy": 6.0, "r": 7.0}
    assert ellipse.geometry == {"cx": 1.0, "cy": 2.0, "rx": 3.0, "ry": 4.0, "theta": 0.0}
    assert rotated.geometry["theta"] == 0.5
    assert point.shape == "point" and point.points == ((8.0, 9.0),) and point.geometry == {}
    assert line.shape == "polyline" and line.points == ((0.0, 0.0), (4.0, 3.0))
    assert [r.origin for r in b.regions] == [f"via.csv row {n}" for n in range(5, 10)]


def test_csv_accepts_via1_hash_header(tmp_path: Path) -> None:
    header = "#" + ",".join(CSV_COLUMNS)
    path = write_csv(tmp_path / "v1.csv", [("x.png", rect(), label("dog"))], header=header)
    [image] = read_via_csv(path, "label")
    assert image.filename == "x.png"
    assert [(r.label, r.shape) for r in image.regions] == [("dog", "rect")]


def test_csv_row_numbers_count_lines_of_multiline_cells(tmp_path: Path) -> None:
    # A quoted cell spanning two lines: the next record starts on line 4, not 3.
    path = write_csv(
        tmp_path / "via.csv",
        [
            ("a.jpg", rect(), '{"label":\n"car"}'),
            ("a.jpg", {"name": "blob"}, label("car")),
        ],
    )
    with pytest.raises(AnnotationError, match=r"via\.csv row 4 \(image a\.jpg\)"):
        read_via_csv(path, "label")


def test_csv_cell_longer_than_the_default_csv_limit_is_read(tmp_path: Path) -> None:
    # A polygon of 100k vertices (CVAT's and VIA's automatic tools make them): one cell of ~3 MB.
    n = 100_000
    xs = [20 + 15 * math.cos(2 * math.pi * i / n) for i in range(n)]
    ys = [15 + 10 * math.sin(2 * math.pi * i / n) for i in range(n)]
    path = write_csv(tmp_path / "via.csv", [("a.jpg", polygon(xs, ys), label("car"))])
    assert len(path.read_text()) > 4 * csv.field_size_limit()
    before = csv.field_size_limit()
    [image] = read_via_csv(path, "label")
    assert len(image.regions[0].points) == n and image.regions[0].points[0] == (35.0, 15.0)
    assert csv.field_size_limit() == before  # the process-wide limit is put back


def test_csv_missing_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "via.csv"
    path.write_text("filename,file_size,region_shape_attributes\na.jpg,1,{}\n")
    with pytest.raises(AnnotationError) as info:
        read_via_csv(path, "label")
    message = str(info.value)
    assert "via.csv" in message and "region_attributes" in message and "region_id" in message


@pytest.mark.parametrize(
    ("shape", "attributes", "expected"),
    [
        (
            '{"name":"rect" "x":1}',
            label("car"),
            "region_shape_attributes is not valid JSON: Expecting ',' delimiter at char 15",
        ),
        (rect(), '{"label": car}', "region_attributes is not valid JSON"),
        ({"name": "blob", "x": 1}, label("car"), "unknown shape 'blob'"),
        (polygon([1, 2], [1, 2]), label("car"), "polygon has 2 points, needs at least 3"),
        (polygon([1, 2, 1], [1, 2, 1]), label("car"), "polygon has 2 points, needs at least 3"),
        (polygon([1, 1], [1, 1], name="polyline"), label("car"), "polyline has 1 points"),
        (polygon([1, 2, 3], [1, 2]), label("car"), "3 all_points_x but 2 all_points_y"),
        ({"name": "polygon", "all_points_x": [1, 2, 3]}, label("car"), "no 'all_points_y'"),
        (polygon([1, "2", 3], [1, 2, 3]), label("car"), "all_points_x[1] is '2', not a number"),
        ({"name": "circle", "cx": 1, "cy": 2}, label("car"), "circle has no 'r'"),
        ({"name": "ellipse", "cx": 1, "cy": 2, "rx": 3, "ry": True}, label("car"), "ry is True"),
        (rect(), label(3), "region_attributes['label'] is 3, not a label; it has ['label']"),
        (rect(), label({"car": True, "bus": True}), "region_attributes['label'] has 2 options"),
        (rect(), "[]", "region_attributes is [], not a JSON object"),
    ],
)
def test_csv_errors_name_file_row_and_key(tmp_path: Path, shape: Cell, attributes: Cell, expected: str) -> None:
    path = write_csv(
        tmp_path / "scenes.csv",
        [
            ("ok.jpg", rect(), label("car")),
            ("scene_003.jpg", shape, attributes),
        ],
    )
    with pytest.raises(AnnotationError) as info:
        read_via_csv(path, "label")
    message = str(info.value)
    assert "scenes.csv row 3 (image scene_003.jpg)" in message
    assert expected in message
    fix = message.split(expected)[-1]
    assert any(word in fix for word in ("VIA", "redraw", "params.yaml"))  # says how to fix


def test_csv_unknown_shape_lists_known_shapes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "via.csv", [("a.jpg", {"name": "blob"}, label("car"))])
    with pytest.raises(AnnotationError, match=r"known shapes are \['polygon', 'polyline'"):
        read_via_csv(path, "label")


def test_csv_short_row_and_empty_file(tmp_path: Path) -> None:
    short = tmp_path / "short.csv"
    short.write_text(",".join(CSV_COLUMNS) + "\na.jpg,1,{}\n")
    with pytest.raises(AnnotationError, match=r"short\.csv row 2: 3 cells but the header has 7"):
        read_via_csv(short, "label")
    empty = tmp_path / "empty.csv"
    empty.write_text("\n")
    with pytest.raises(AnnotationError, match=r"empty\.csv: the file is empty"):
        read_via_csv(empty, "label")


# --- JSON --------------------------------------------------------------------------


def test_json_via1_dict_regions_in_numeric_id_order(tmp_path: Path) -> None:
    # Ids with gaps, and "10" after "2": string order would put it first.
    regions = {
        "10": {"shape_attributes": rect(10), "region_attributes": label("ten")},
        "0": {"shape_attributes": rect(0), "region_attributes": label("zero")},
        "2": {"shape_attributes": polygon([0, 4, 4], [0, 0, 3]), "region_attributes": label("two")},
    }
    path = write_json(
        tmp_path / "v1.json",
        {
            "a.jpg": {
                "fileref": "",
                "size": 9,
                "filename": "a.jpg",
                "base64_img_data": "",
                "file_attributes": {},
                "regions": regions,
            },
            "b.jpg": {"filename": "b.jpg", "size": 1, "regions": {}},
        },
    )
    a, b = read_via_json(path, "label")
    assert [r.label for r in a.regions] == ["zero", "two", "ten"]
    assert a.regions[0].geometry == {"x": 0.0, "y": 2.0, "width": 3.0, "height": 4.0}
    assert a.regions[1].points == ((0.0, 0.0), (4.0, 0.0), (4.0, 3.0))
    assert [r.origin for r in a.regions] == [f"v1.json image 'a.jpg' region {n}" for n in ("0", "2", "10")]
    assert a.origin == "v1.json image 'a.jpg'"
    assert (b.filename, b.regions) == ("b.jpg", ())


def via2_metadata() -> dict[str, Any]:
    return {
        "c.jpg123": {
            "filename": "c.jpg",
            "size": 123,
            "file_attributes": {},
            "regions": [
                {
                    "shape_attributes": {"name": "circle", "cx": 1, "cy": 2, "r": 3},
                    "region_attributes": label({"cat": True}),
                },
                {"shape_attributes": {"name": "point", "cx": 4.5, "cy": 5}, "region_attributes": label("nose")},
            ],
        },
        "d.jpg7": {"filename": "sub/d.jpg", "size": 7, "file_attributes": {}, "regions": []},
    }


def test_json_via2_list_regions(tmp_path: Path) -> None:
    c, d = read_via_json(write_json(tmp_path / "v2.json", via2_metadata()), "label")
    assert c.filename == "c.jpg" and d.filename == "sub/d.jpg" and d.regions == ()
    assert [(r.label, r.shape) for r in c.regions] == [("cat", "circle"), ("nose", "point")]
    assert c.regions[0].geometry == {"cx": 1.0, "cy": 2.0, "r": 3.0}
    assert c.regions[1].points == ((4.5, 5.0),)
    assert c.regions[1].origin == "v2.json image 'c.jpg' region 1"


def test_json_via2_project_file(tmp_path: Path) -> None:
    project = {
        "_via_settings": {"ui": {}, "core": {}, "project": {"name": "p"}},
        "_via_img_metadata": via2_metadata(),
        "_via_attributes": {"region": {"label": {"type": "checkbox"}}, "file": {}},
        "_via_data_format_version": "2.0.10",
        "_via_image_id_list": ["c.jpg123", "d.jpg7"],
    }
    from_project = read_via_json(write_json(tmp_path / "project.json", project), "label")
    from_export = read_via_json(write_json(tmp_path / "v2.json", via2_metadata()), "label")
    assert strip_origins(from_project) == strip_origins(from_export)
    assert len(from_project) == 2


def test_json_truncated_file_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "cut.json"
    path.write_text(json.dumps(via2_metadata(), indent=1)[:200])
    with pytest.raises(AnnotationError) as info:
        read_via_json(path, "label")
    message = str(info.value)
    assert "cut.json line " in message and " column " in message
    assert "export the annotations again from VIA" in message


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ({"shape_attributes": {"name": "blob"}, "region_attributes": label("x")}, "unknown shape 'blob'"),
        (
            {"shape_attributes": rect(), "region_attributes": {"label": ["x"]}},
            "region_attributes['label'] is ['x'], not a label",
        ),
        (
            {
                "shape_attributes": {"name": "rect", "x": 1, "y": 2, "width": "3", "height": 4},
                "region_attributes": label("x"),
            },
            "width is '3', not a number",
        ),
        ({"region_attributes": label("x")}, "no 'shape_attributes'"),
    ],
)
def test_json_errors_name_file_image_region_and_key(tmp_path: Path, region: dict[str, Any], expected: str) -> None:
    ok = {"shape_attributes": rect(), "region_attributes": label("x")}
    path = write_json(
        tmp_path / "bad.json",
        {
            "birds.jpg9": {"filename": "birds.jpg", "size": 9, "regions": [ok, ok, region]},
        },
    )
    with pytest.raises(AnnotationError) as info:
        read_via_json(path, "label")
    message = str(info.value)
    assert "bad.json image 'birds.jpg' region 2" in message
    assert expected in message


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ([1, 2], "expected a JSON object keyed by image, found list"),
        ({"project": {"pid": "x"}}, "record 'project': no 'filename'"),
        ({"a": {"filename": "a.jpg"}}, "image 'a.jpg': no 'regions'"),
        ({"a": {"filename": "a.jpg", "regions": 5}}, "'regions' is int"),
        ({"a": {"filename": "a.jpg", "regions": {"one": {}}}}, "region ids ['one']"),
    ],
)
def test_json_structure_errors(tmp_path: Path, payload: Any, expected: str) -> None:
    with pytest.raises(AnnotationError) as info:
        read_via_json(write_json(tmp_path / "odd.json", payload), "label")
    assert "odd.json" in str(info.value) and expected in str(info.value)


def test_json_duplicate_regions_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    twice = {"shape_attributes": rect(), "region_attributes": label("x")}
    path = write_json(tmp_path / "dup.json", {"a": {"filename": "a.jpg", "regions": [twice] * 3}})
    with caplog.at_level(logging.WARNING, logger="segflow.data.readers.via"):
        [image] = read_via_json(path, "label")
    assert len(image.regions) == 3  # kept: duplicates paint the same pixels
    assert "image a.jpg: 2 regions repeat another exactly" in caplog.text


# --- format dispatch ---------------------------------------------------------------


def test_read_annotation_file_dispatch(tmp_path: Path) -> None:
    assert FORMATS[:6] == ("auto", "via_csv", "via_json", "coco", "labelme", "cityscapes")
    csv_path = write_csv(tmp_path / "a.CSV", [("a.jpg", rect(), label("car"))])
    json_path = write_json(tmp_path / "a.json", via2_metadata())
    assert strip_origins(read_annotation_file(csv_path, "auto", "label")) == [
        ("a.jpg", [("car", "rect", (), {"x": 1.0, "y": 2.0, "width": 3.0, "height": 4.0})])
    ]
    assert len(read_annotation_file(json_path, "auto", "label")) == 2
    assert len(read_annotation_file(json_path, "via_json", "label")) == 2
    with pytest.raises(
        AnnotationError,
        match=r"unknown annotation format 'yolo'; choose from "
        r"\['auto', 'via_csv', 'via_json', 'coco'",
    ):
        read_annotation_file(json_path, "yolo", "label")
    unknown = tmp_path / "a.yaml"  # (.xml is CVAT's)
    with pytest.raises(AnnotationError, match=r"a\.yaml: .*'\.yaml'.*'via_csv', 'via_json'"):
        read_annotation_file(unknown, "auto", "label")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match=r"nope\.csv: cannot read the file"):
        read_via_csv(tmp_path / "nope.csv", "label")


# --- the real exports in shared/datasets/via-2label (counts from its SOURCE.md) ----------


def real_export(commit: str, suffix: str) -> Path:
    path = DATASET / commit / "datasets" / "via" / f"via_region_data.{suffix}"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared via-2label dataset is not checked out)")
    return path


def shape_counts(images: list[ImageAnnotation]) -> Counter[str]:
    return Counter(region.shape for image in images for region in image.regions)


def test_real_head_csv() -> None:
    images = read_via_csv(real_export("HEAD", "csv"), "labels")
    assert [image.filename for image in images] == ["strawberry.jpg", "shapes.jpg", "crack.jpeg", "birds.jpg"]
    assert sum(len(image.regions) for image in images) == 25
    assert shape_counts(images) == {"rect": 18, "polygon": 3, "polyline": 2, "ellipse": 1, "circle": 1}
    labels = Counter(region.label for image in images for region in image.regions)
    assert labels == {
        "strawberry": 17,
        "bird": 2,
        "rectangle": 1,
        "triangle": 1,
        "ellipse": 1,
        "circle": 1,
        "line": 1,
        "crack": 1,
    }
    triangle = images[1].regions[1]
    assert triangle.points == ((428.0, 33.0), (324.0, 199.0), (548.0, 199.0))
    assert triangle.origin == "via_region_data.csv row 20"


def test_real_head_json_has_strawberries_twice() -> None:
    images = read_via_json(real_export("HEAD", "json"), "labels")
    assert sum(len(image.regions) for image in images) == 42
    assert shape_counts(images) == {"rect": 35, "polygon": 3, "polyline": 2, "ellipse": 1, "circle": 1}
    strawberries = [r.geometry for r in images[0].regions]
    assert len(strawberries) == 34 and strawberries[:17] == strawberries[17:]  # drawn twice
    from_csv = read_via_csv(real_export("HEAD", "csv"), "labels")
    assert strawberries[:17] == [r.geometry for r in from_csv[0].regions]
    assert strip_origins(images[1:]) == strip_origins(from_csv[1:])


def test_real_74f5376_csv_and_json_agree() -> None:
    from_csv = read_via_csv(real_export("74f5376", "csv"), "labels")
    from_json = read_via_json(real_export("74f5376", "json"), "labels")
    assert strip_origins(from_csv) == strip_origins(from_json)
    assert [image.filename for image in from_csv] == ["img.jpg", "img2.jpg", "img3.jpg"]
    assert sum(len(image.regions) for image in from_csv) == 54
    assert shape_counts(from_csv) == {"rect": 48, "polygon": 2, "polyline": 4}
    polylines = [r for image in from_csv for r in image.regions if r.shape == "polyline"]
    assert min(len(r.points) for r in polylines) == 2  # a 2-point polyline is a valid line


def test_regions_without_a_label_read_as_unlabeled(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_csv(
        tmp_path / "one_class.csv",
        [
            ("a.jpg", rect(), {}),  # VIA's empty region_attributes: nobody typed a label
            ("a.jpg", rect(), label("  ")),
            ("a.jpg", rect(), label({"car": False})),  # a checkbox with nothing ticked
            ("b.jpg", rect(), label("car")),
        ],
    )
    with caplog.at_level(logging.WARNING):
        images = read_via_csv(path, "label")
    assert [[r.label for r in image.regions] for image in images] == [["", "", ""], ["car"]]
    assert "have no 'label'" not in caplog.text  # no other attribute: nothing to hint at


def test_unlabeled_regions_with_other_attributes_hint_at_label_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_json(
        tmp_path / "via.json",
        {
            "a.jpg1": {
                "filename": "a.jpg",
                "regions": [{"shape_attributes": rect(), "region_attributes": {"labels": "x"}}],
            }
        },
    )
    with caplog.at_level(logging.WARNING):
        [image] = read_via_json(path, "label")
    assert image.regions[0].label == ""
    assert (
        "1 regions have no 'label'" in caplog.text and "['labels']" in caplog.text and "fetch.label_key" in caplog.text
    )


BALLOON = SHARED_DATASETS / "via-heads-balloon"


def test_real_balloon_layout_reads_unlabeled_polylines() -> None:
    path = BALLOON / "train" / "via_region_data.json"
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared via-heads-balloon dataset is not checked out)")
    images = read_via_json(path, "label")
    assert len(images) == 31 and shape_counts(images) == {"polyline": 31}  # regions as a dict, VIA 1.x
    assert {region.label for image in images for region in image.regions} == {""}
    [val] = read_via_json(BALLOON / "val" / "via_region_data.json", "label")[:1]
    assert val.filename == "1.jpg" and val.regions[0].shape == "polygon" and val.regions[0].label == ""


# --- issue 22: structured-input limits ---


def test_deeply_nested_json_is_a_clear_error_not_a_recursion_traceback(tmp_path):
    path = tmp_path / "via_region_data.json"
    path.write_text("[" * 100_000)  # the file: an uncaught RecursionError before
    for fmt in ("auto", "via_json"):
        with pytest.raises(AnnotationError) as raised:
            read_annotation_file(path, fmt, "label")
        assert str(raised.value).startswith(f"{path}: JSON nested deeper than "), str(raised.value)
        assert "export the annotations again" in str(raised.value)
    cell = '"' + "[" * 100_000 + '"'
    csv_path = tmp_path / "via.csv"
    csv_path.write_text(f"{','.join(CSV_COLUMNS)}\na.jpg,1,{{}},1,0,{cell},{{}}\n")
    with pytest.raises(
        AnnotationError, match=r"via.csv row 2 \(image a.jpg\): region_shape_attributes is JSON nested deeper"
    ):
        read_via_csv(csv_path, "label")


def test_an_annotation_file_over_the_size_limit_is_refused_before_it_is_read(via_dataset, make_params, tmp_path):
    csv = via_dataset / "via_region_data.csv"
    size = csv.stat().st_size
    with pytest.raises(AnnotationError) as raised:
        fetch(make_params(fetch={"source": str(via_dataset), "max_annotation_bytes": size - 1}), tmp_path / "fetch")
    assert f"{csv}: the annotation file is {size:,} bytes, over the limit of {size - 1:,}" in str(raised.value)
    assert "(fetch.max_annotation_bytes)" in str(raised.value) and not (tmp_path / "fetch").exists()
    fetch(make_params(fetch={"source": str(via_dataset), "max_annotation_bytes": size}), tmp_path / "fetch")
    labelme = tmp_path / "labelme"
    labelme.mkdir()
    (labelme / "a.json").write_text(" " * 1000)  # a folder format: each file below it is checked
    with pytest.raises(AnnotationError, match=r"a.json: the annotation file is 1,000 bytes"):
        check_sizes(labelme, 999)
