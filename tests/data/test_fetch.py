import json

import pytest
from helpers import VIA_HEADER, via_row, write_image

from segflow.data.fetch import fetch
from segflow.errors import AnnotationError, ConfigError, ImageError


def test_snapshot_holds_images_canonical_records_and_manifest(via_dataset, make_params, tmp_path):
    params = make_params(fetch={"source": str(via_dataset)})
    manifest = fetch(params, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["a.jpg", "b.jpg"]
    assert manifest.images == 2 and manifest.regions == 3
    assert manifest.regions_per_class["car"] == 1 and manifest.regions_per_class["road"] == 0
    assert manifest.files[0].width == 40 and manifest.files[0].height == 30
    assert len(manifest.files[0].sha256) == 64
    records = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [r["label"] for r in records["images"][0]["regions"]] == ["sky", "car"]


def test_label_map_renames_labels(via_dataset, make_params, tmp_path):
    csv = via_dataset / "via_region_data.csv"
    csv.write_text(csv.read_text().replace('""person""', '""pedestrian""'))
    params = make_params(fetch={"source": str(via_dataset)}, classes={"label_map": {"pedestrian": "person"}})
    assert fetch(params, tmp_path / "out").regions_per_class["person"] == 1


def test_polylines_are_kept_for_rasterize_to_decide(via_dataset, make_params, tmp_path):
    csv = via_dataset / "via_region_data.csv"
    csv.write_text(
        csv.read_text()
        + via_row("b.jpg", 1, 1, '{"name":"polyline","all_points_x":[1,9],"all_points_y":[1,9]}', '{"label":"road"}')
        + "\n"
    )
    manifest = fetch(make_params(fetch={"source": str(via_dataset)}), tmp_path / "out")
    assert manifest.regions == 4 and manifest.regions_per_class["road"] == 1
    records = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert records["version"] == 2
    assert records["images"][1]["regions"][1]["shape"] == "polyline"


BAD_ROWS = {
    "missing image": (
        via_row("ghost.jpg", 1, 0, '{"name":"rect","x":0,"y":0,"width":4,"height":4}', '{"label":"car"}'),
        ImageError,
        ["ghost.jpg", "row 5", "add the file"],
    ),
    "malformed shape JSON": (
        via_row("a.jpg", 1, 0, '{"name":"polygon","all_points_x":[1,2,3]', '{"label":"car"}'),
        AnnotationError,
        ["via_region_data.csv row 5", "region_shape_attributes", "not valid JSON"],
    ),
    "polygon with 2 points": (
        via_row("a.jpg", 1, 0, '{"name":"polygon","all_points_x":[1,5],"all_points_y":[1,5]}', '{"label":"car"}'),
        AnnotationError,
        ["via_region_data.csv row 5", "2 points", "at least 3"],
    ),
    "unknown label": (
        via_row("a.jpg", 1, 0, '{"name":"rect","x":0,"y":0,"width":4,"height":4}', '{"label":"tree"}'),
        AnnotationError,
        ["via_region_data.csv row 5", "'tree'", "classes.label_map"],
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_row_names_file_and_row_and_leaves_nothing(case, via_dataset, make_params, tmp_path):
    row, error, expected = BAD_ROWS[case]
    csv = via_dataset / "via_region_data.csv"
    csv.write_text(csv.read_text() + row + "\n")
    out = tmp_path / "artifacts" / "fetch"
    with pytest.raises(error) as raised:
        fetch(make_params(fetch={"source": str(via_dataset)}), out)
    for fragment in expected:
        assert fragment in str(raised.value)
    assert not out.exists()
    leftovers = list(out.parent.iterdir()) if out.parent.exists() else []
    assert leftovers == []  # no staging folder left behind either


def test_unreadable_image_names_the_file_and_row(via_dataset, make_params, tmp_path):
    (via_dataset / "b.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    out = tmp_path / "fetch"
    with pytest.raises(ImageError) as raised:
        fetch(make_params(fetch={"source": str(via_dataset)}), out)
    assert "b.jpg" in str(raised.value) and "row 4" in str(raised.value)
    assert "not a decodable image" in str(raised.value)
    assert not out.exists()


def test_missing_annotation_file_says_how_to_fix(make_params, tmp_path):
    with pytest.raises(AnnotationError, match="annotation file not found.*dvc pull"):
        fetch(make_params(fetch={"source": str(tmp_path)}), tmp_path / "out")


def test_missing_column_is_named(via_dataset, make_params, tmp_path):
    csv = via_dataset / "via_region_data.csv"
    csv.write_text(VIA_HEADER.replace(",region_attributes", "") + "\n")
    with pytest.raises(AnnotationError, match="region_attributes"):
        fetch(make_params(fetch={"source": str(via_dataset)}), tmp_path / "out")


# --- the bad inputs, in both fetch.bad_records modes -------------------------


def _labelme(path, image="a.jpg", points=((1, 1), (9, 1), (9, 9))):
    path.write_text(
        json.dumps(
            {
                "imagePath": image,
                "imageData": None,
                "imageHeight": 30,
                "imageWidth": 40,
                "shapes": [{"label": "car", "shape_type": "polygon", "points": points}],
            }
        )
    )


def _coco(path, height):
    import numpy as np
    from pycocotools import mask as coco_mask

    rle = coco_mask.encode(np.ones((height, 40), np.uint8, order="F"))
    path.write_text(
        json.dumps(
            {
                "images": [
                    {"id": 1, "file_name": "a.jpg", "height": height, "width": 40},
                    {"id": 2, "file_name": "b.jpg", "height": 30, "width": 40},
                ],
                "categories": [{"id": 1, "name": "car"}],
                "annotations": [
                    {
                        "id": 5,
                        "image_id": 1,
                        "category_id": 1,
                        "iscrowd": 1,
                        "segmentation": {"size": [height, 40], "counts": rle["counts"].decode()},
                    }
                ],
            }
        )
    )


def _bad_input(case, source):
    """Write `source`'s annotations with one bad input; returns fetch.annotations."""
    csv = source / "via_region_data.csv"
    if case == "truncated JSON":
        (source / "json").mkdir()
        _labelme(source / "json" / "a.json", image="../a.jpg")
        _labelme(source / "json" / "b.json", image="../b.jpg")
        (source / "json" / "b.json").write_text((source / "json" / "b.json").read_text()[:60])
        return "json"
    if case == "RLE size mismatch":
        _coco(source / "coco.json", height=20)  # a.jpg is really 40x30
        return "coco.json"
    if case == "symlink loop":
        (source / "loop.jpg").symlink_to("loop2.jpg")
        (source / "loop2.jpg").symlink_to("loop.jpg")
    rect = '{"name":"rect","x":0,"y":0,"width":4,"height":4}'
    rows = {
        "CSV missing column": None,
        "missing image": via_row(
            "ghost.jpg", 1, 0, '{"name":"rect","x":0,"y":0,"width":4,"height":4}', '{"label":"car"}'
        ),
        "polygon outside": via_row(
            "a.jpg", 3, 2, '{"name":"polygon","all_points_x":[50,60,55],"all_points_y":[1,1,9]}', '{"label":"car"}'
        ),
        "unknown shape": via_row("a.jpg", 3, 2, '{"name":"hexagon","cx":5}', '{"label":"car"}'),
        "symlink loop": via_row("loop.jpg", 1, 0, rect, '{"label":"car"}'),
        "NUL in image name": via_row("c\0.jpg", 1, 0, rect, '{"label":"car"}'),
        "coordinate 1e300": via_row(
            "a.jpg", 3, 2, '{"name":"polygon","all_points_x":[1,1e300,5],"all_points_y":[1,2,9]}', '{"label":"car"}'
        ),
        "infinite radius": via_row("b.jpg", 2, 1, '{"name":"circle","cx":5,"cy":5,"r":1e999}', '{"label":"car"}'),
    }
    if rows[case] is None:
        csv.write_text(csv.read_text().replace(",region_attributes", "", 1))
    else:
        csv.write_text(csv.read_text() + rows[case] + "\n")
    return "via_region_data.csv"


BAD_INPUTS = {  # case: (error when failing, message fragments, reason counted when skipping)
    "truncated JSON": (AnnotationError, ["b.json line 1 column", "not valid JSON", "truncated"], "unreadable file"),
    "CSV missing column": (AnnotationError, ["via_region_data.csv", "no column(s) ['region_attributes']"], None),
    "missing image": (ImageError, ["ghost.jpg", "via_region_data.csv row 5", "add the file"], "missing image"),
    "polygon outside": (
        None,
        ["via_region_data.csv row 5", "wholly outside the 40x30 image a.jpg"],
        "outside the image",
    ),
    "unknown shape": (AnnotationError, ["via_region_data.csv row 5", "unknown shape 'hexagon'"], "unknown shape"),
    "RLE size mismatch": (
        AnnotationError,
        ["coco.json annotation id 5", "RLE size [20, 40]", "[30, 40] of a.jpg"],
        "RLE size mismatch",
    ),
    # Found by fuzzing: each ended in a traceback or an int32 overflow in rasterize.
    "symlink loop": (AnnotationError, ["via_region_data.csv row 5", "loop.jpg is a symlink loop"], "unreadable image"),
    "NUL in image name": (
        AnnotationError,
        ["via_region_data.csv row 5", "'c\\x00.jpg' holds a NUL byte"],
        "bad image name",
    ),
    "coordinate 1e300": (
        AnnotationError,
        ["via_region_data.csv row 5", "points[1] of the polygon is 1e+300", "±1e+06 px"],
        "bad geometry",
    ),
    "infinite radius": (AnnotationError, ["via_region_data.csv row 5", "r is inf, not a number"], "bad geometry"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
@pytest.mark.parametrize("mode", ["fail", "skip"])
def test_bad_input_is_named_counted_and_leaves_nothing_partial(case, mode, via_dataset, make_params, tmp_path, caplog):
    error, fragments, reason = BAD_INPUTS[case]
    annotations = _bad_input(case, via_dataset)
    params = make_params(fetch={"source": str(via_dataset), "annotations": annotations, "bad_records": mode})
    out = tmp_path / "artifacts" / "fetch"
    if error is not None and (mode == "fail" or reason is None):
        with pytest.raises(error) as raised:
            fetch(params, out)
        assert all(fragment in str(raised.value) for fragment in fragments), str(raised.value)
        assert not out.parent.exists() or list(out.parent.iterdir()) == []  # no output, no staging
        # A bad record's error says, once, that it may be skipped; a whole-file error cannot be.
        assert str(raised.value).count("fetch.bad_records: skip") == (reason is not None), str(raised.value)
        return
    fetch(params, out)
    report = json.loads((out / "report.json").read_text())
    assert report["dropped"]["counts"] == {reason: 1}
    [message] = report["dropped"]["examples"][reason]
    assert all(fragment in message for fragment in fragments), message
    assert all(fragment in caplog.text for fragment in fragments)  # warned as it happened
    assert report["unreadable_files"] == (reason in ("unreadable file", "missing image", "unreadable image"))


# --- issue 12's other bad inputs (several files, globs, names): named, nothing left in artifacts/ ---

_RECT = '{"name":"rect","x":0,"y":0,"width":4,"height":4}'
SOURCE_ERRORS = {  # case: (fetch settings, extra CSV row, error, message fragments)
    "glob matching nothing": (
        {"annotations": ["via_region_data.csv", "*/via_region_data.json"]},
        None,
        AnnotationError,
        ["no file matches the fetch.annotations pattern '*/via_region_data.json'"],
    ),
    "absolute glob": ({"annotations": "/anywhere/*.csv"}, None, AnnotationError, ["'/anywhere/*.csv' is absolute"]),
    "missing second file": (
        {"annotations": ["via_region_data.csv", "more.csv"]},
        None,
        AnnotationError,
        ["more.csv: annotation file not found"],
    ),
    "image outside the source": (
        {},
        via_row("../outside.jpg", 1, 0, _RECT, '{"label":"car"}'),
        AnnotationError,
        ["via_region_data.csv row 5", "outside.jpg", "outside the source folder"],
    ),
    "image twice in one file": (
        {},
        via_row("./a.jpg", 1, 0, _RECT, '{"label":"car"}'),
        AnnotationError,
        ["via_region_data.csv row 5: names the image a.jpg that via_region_data.csv row 2 names too"],
    ),
    "default label not a class": ({"default_label": "balloon"}, None, ConfigError, ["'balloon', not a class"]),
}


@pytest.mark.parametrize("case", sorted(SOURCE_ERRORS))
def test_source_error_names_the_file_and_leaves_artifacts_empty(case, via_dataset, make_params, tmp_path):
    settings, row, error, fragments = SOURCE_ERRORS[case]
    write_image(tmp_path / "outside.jpg")
    if row is not None:
        csv = via_dataset / "via_region_data.csv"
        csv.write_text(csv.read_text() + row + "\n")
    artifacts = tmp_path / "artifacts"
    with pytest.raises(error) as raised:
        fetch(make_params(fetch={"source": str(via_dataset), **settings}), artifacts / "fetch")
    assert all(fragment in str(raised.value) for fragment in fragments), str(raised.value)
    assert not artifacts.exists() or list(artifacts.iterdir()) == []  # no output, staging folder or cache
