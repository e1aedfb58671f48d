"""The dataset report: written by fetch, completed by rasterize, shown as a table and a chart."""

from __future__ import annotations

import json
import shutil

import cv2
from helpers import via_row, write_image
from rich.console import Console

from segflow.data.fetch import fetch
from segflow.data.rasterize import rasterize
from segflow.data.report import DatasetReport, add_pixels, read_report, report_table


def test_report_counts_classes_pixels_drops_clips_and_duplicates(via_dataset, make_params, tmp_path):
    write_image(via_dataset / "b.jpg", value=60)  # the fixture's two images are identical
    shutil.copyfile(via_dataset / "a.jpg", via_dataset / "copy_of_a.jpg")  # an exact duplicate
    csv = via_dataset / "via_region_data.csv"
    csv.write_text(
        csv.read_text()
        + "\n".join(
            [
                via_row("copy_of_a.jpg", 0, 0, "{}", "{}"),  # an image without regions
                via_row("b.jpg", 3, 1, '{"name":"rect","x":30,"y":20,"width":20,"height":20}', '{"label":"road"}'),
                via_row(
                    "b.jpg", 3, 2, '{"name":"polyline","all_points_x":[0,9],"all_points_y":[0,9]}', '{"label":"road"}'
                ),
            ]
        )
        + "\n"
    )
    params = make_params(fetch={"source": str(via_dataset)})
    fetch(params, tmp_path / "fetch")
    pixels = rasterize(params, tmp_path / "fetch", tmp_path / "masks", report_dir=tmp_path / "report")
    report = json.loads((tmp_path / "report" / "report.json").read_text())

    assert report["format"] == "via_csv" and report["images"] == 3 and report["regions"] == 5
    assert report["classes"]["car"] == {
        "images": 1,
        "instances": 1,
        "hidden": 0,
        "pixels": 121,
        "pixel_share": 121 / (3 * 40 * 30),
    }
    assert report["classes"]["road"]["instances"] == 2 and report["classes"]["road"]["pixels"] == 10 * 10
    assert sum(c["pixels"] for c in report["classes"].values()) == sum(pixels.values()) == 3 * 40 * 30
    assert report["images_without_regions"] == {"count": 1, "examples": ["copy_of_a.jpg"]}
    assert report["duplicate_images"] == [["a.jpg", "copy_of_a.jpg"]]
    assert report["clipped"]["count"] == 1 and "row 6" in report["clipped"]["examples"][0]
    assert report["dropped"]["counts"] == {"polyline not drawn": 1}
    assert "rasterize.polyline_width" in report["dropped"]["examples"]["polyline not drawn"][0]
    assert report["unreadable_files"] == 0
    chart = cv2.imread(str(tmp_path / "report" / "class_pixels.png"))
    assert chart is not None and chart.shape[0] > 200

    console = Console(record=True, width=100)
    console.print(report_table(read_report(tmp_path / "report")))
    text = console.export_text()
    assert "dataset: 3 images, 5 regions (via_csv)" in text and "duplicate images" in text
    assert "dropped: polyline not drawn" in text and "background" in text


def test_fetch_report_is_written_before_pixels_exist(via_dataset, make_params, tmp_path):
    fetch(make_params(fetch={"source": str(via_dataset)}), tmp_path / "fetch")
    report = json.loads((tmp_path / "fetch" / "report.json").read_text())
    assert report["classes"]["sky"] == {"images": 1, "instances": 1}
    assert not (tmp_path / "fetch" / "class_pixels.png").exists()  # no pixels yet, no chart
    console = Console(record=True, width=100)
    console.print(report_table(read_report(tmp_path / "fetch")))
    assert "sky" in console.export_text()


def test_unused_labels_uncovered_images_and_hidden_regions_are_reported_and_printed(via_dataset, make_params, tmp_path):
    write_image(via_dataset / "extra" / "stray.jpg")  # an image no annotation file names
    fetch(make_params(fetch={"source": str(via_dataset)}), tmp_path / "fetch")
    report = json.loads((tmp_path / "fetch" / "report.json").read_text())
    assert report["uncovered_images"] == {"count": 1, "examples": ["extra/stray.jpg"], "unread_annotations": []}
    assert report["unused_labels"] == {"count": 0, "labels": [], "as": "typed"}
    report["unused_labels"] = {"count": 2, "labels": ["zebra", "digit"], "as": "report"}
    hidden = {"regions": {"car": 1}, "images": {"car": 1}, "examples": {"car": ["via_region_data.csv row 3"]}}
    full = add_pixels(
        DatasetReport.model_validate(report), {"background": 10, "car": 0}, {"counts": {}, "examples": {}}, hidden
    )
    assert full.classes["car"].model_dump() | {"pixel_share": 0} == {
        "images": 0,
        "instances": 0,
        "hidden": 1,
        "pixels": 0,
        "pixel_share": 0,
    }
    assert full.hidden_regions.model_dump() == {
        "counts": {"car": 1},
        "examples": {"car": ["via_region_data.csv row 3"]},
    }
    console = Console(record=True, width=120)
    console.print(report_table(full))
    text = console.export_text()
    assert "images in no annotation file (left out)" in text
    assert "labels on no region (not classes): zebra, digit" in text and "hidden regions: car" in text
