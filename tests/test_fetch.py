import json

import pytest

from segflow.errors import AnnotationError, ImageError
from segflow.fetch import fetch

from conftest import VIA_HEADER, via_row


def test_snapshot_holds_images_canonical_records_and_manifest(via_dataset, make_params, tmp_path):
    params = make_params(fetch={"source": str(via_dataset)})
    manifest = fetch(params, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out" / "images").iterdir()) == ["a.jpg", "b.jpg"]
    assert manifest["images"] == 2 and manifest["regions"] == 3
    assert manifest["regions_per_class"]["car"] == 1 and manifest["regions_per_class"]["road"] == 0
    assert manifest["files"][0]["width"] == 40 and manifest["files"][0]["height"] == 30
    assert len(manifest["files"][0]["sha256"]) == 64
    records = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert [r["label"] for r in records["images"][0]["regions"]] == ["sky", "car"]


def test_label_map_renames_labels(via_dataset, make_params, tmp_path):
    csv = via_dataset / "via_region_data.csv"
    csv.write_text(csv.read_text().replace('""person""', '""pedestrian""'))
    params = make_params(fetch={"source": str(via_dataset)}, classes={"label_map": {"pedestrian": "person"}})
    assert fetch(params, tmp_path / "out")["regions_per_class"]["person"] == 1


def test_polylines_and_points_are_skipped_and_counted(via_dataset, make_params, tmp_path):
    csv = via_dataset / "via_region_data.csv"
    csv.write_text(csv.read_text() + via_row("b.jpg", 1, 1, '{"name":"polyline","all_points_x":[1,9],"all_points_y":[1,9]}', '{"label":"road"}') + "\n")
    manifest = fetch(make_params(fetch={"source": str(via_dataset)}), tmp_path / "out")
    assert manifest["skipped_regions"] == {"polyline": 1}
    assert manifest["regions"] == 3


BAD_ROWS = {
    "missing image": (
        via_row("ghost.jpg", 1, 0, '{"name":"rect","x":0,"y":0,"width":4,"height":4}', '{"label":"car"}'),
        ImageError, ["ghost.jpg", "row 5", "add the file"],
    ),
    "malformed shape JSON": (
        via_row("a.jpg", 1, 0, '{"name":"polygon","all_points_x":[1,2,3]', '{"label":"car"}'),
        AnnotationError, ["via_region_data.csv row 5", "region_shape_attributes", "not valid JSON"],
    ),
    "polygon with 2 points": (
        via_row("a.jpg", 1, 0, '{"name":"polygon","all_points_x":[1,5],"all_points_y":[1,5]}', '{"label":"car"}'),
        AnnotationError, ["via_region_data.csv row 5", "2 points", "at least 3"],
    ),
    "unknown label": (
        via_row("a.jpg", 1, 0, '{"name":"rect","x":0,"y":0,"width":4,"height":4}', '{"label":"tree"}'),
        AnnotationError, ["via_region_data.csv row 5", "'tree'", "classes.label_map"],
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
