"""``classes.names: auto``: the classes fetch finds (segflow.data.found_classes), the file it
writes, and how later stages read it (segflow.config.auto_classes)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, SHARED_DATASETS, write_image
from rich.console import Console

from segflow.config import ClassesParams
from segflow.config.auto_classes import with_classes_file
from segflow.data.fetch import CLASSES_FILE, fetch
from segflow.data.report import DatasetReport, report_table
from segflow.errors import ConfigError

EXPORT = REPO_ROOT / "tests" / "files" / "label_studio"
LS_FOUND = ["background", "ball", "car", "grass", "person", "road", "sign"]
SEAGRASS = SHARED_DATASETS / "cvat-seagrass-polygons"
CHEETAH = SHARED_DATASETS / "cvat-segmask-cheetah"
LABELME_COCO = SHARED_DATASETS / "labelme-examples" / "examples" / "instance_segmentation" / "data_dataset_coco"


def auto(make_params, classes: dict | None = None, **fetch_settings):
    return make_params(classes={"names": "auto", "palette": [], **(classes or {})}, fetch=fetch_settings)


def found(folder: Path) -> list[str]:
    return yaml.safe_load((folder / CLASSES_FILE).read_text())["classes"]["names"]


def test_found_labels_background_first_then_sorted(via_dataset, make_params, tmp_path):
    manifest = fetch(auto(make_params, source=str(via_dataset)), tmp_path / "fetch")
    assert found(tmp_path / "fetch") == ["background", "car", "person", "sky"]
    assert manifest.regions_per_class == {"background": 0, "car": 1, "person": 1, "sky": 1}
    assert "found by fetch" in (tmp_path / "fetch" / CLASSES_FILE).read_text()


def test_order_does_not_depend_on_the_annotations_order(make_params, tmp_path):
    source = tmp_path / "ls"
    shutil.copytree(EXPORT, source)
    tasks = json.loads((source / "export.json").read_text())
    (source / "export.json").write_text(json.dumps(tasks[::-1]))
    fetch(auto(make_params, source=str(EXPORT), annotations="export.json"), tmp_path / "one")
    fetch(auto(make_params, source=str(source), annotations="export.json"), tmp_path / "two")
    assert found(tmp_path / "one") == found(tmp_path / "two") == LS_FOUND
    classes = ClassesParams(names="auto")
    assert (
        classes.auto_names(["b", "a", "", "c", "a"])
        == classes.auto_names(["c", "a", "b"])
        == [
            "background",
            "a",
            "b",
            "c",
        ]
    )


def test_label_map_default_label_and_ignore_shape_the_list(make_params, tmp_path):
    classes = {"label_map": {"sign": "ignore", "road": "street", "ball": "car"}}
    params = auto(make_params, classes, source=str(EXPORT), annotations="export.json", default_label="unnamed")
    fetch(params, tmp_path / "fetch")
    assert found(tmp_path / "fetch") == ["background", "car", "grass", "person", "street", "unnamed"]


def _report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def _printed(report: dict) -> str:
    console = Console(record=True, width=200)
    console.print(report_table(DatasetReport.model_validate(report)))
    return console.export_text()


def test_cvat_declared_labels_unused_are_reported_not_classes_unless_asked(make_params, tmp_path, caplog):
    source = tmp_path / "cvat"
    write_image(source / "a.jpg")
    meta = "".join(f"<label><name>{name}</name></label>" for name in ("zebra", "cat"))
    xml = (
        f"<annotations><version>1.1</version><meta><task><labels>{meta}</labels></task></meta>"
        '<image id="0" name="a.jpg" width="40" height="30">'
        '<box label="cat" xtl="1" ytl="1" xbr="9" ybr="9" z_order="0"/></image></annotations>'
    )
    (source / "annotations.xml").write_text(xml)
    fetch(auto(make_params, source=str(source), annotations="annotations.xml"), tmp_path / "fetch")
    assert found(tmp_path / "fetch") == ["background", "cat"]
    assert _report(tmp_path / "fetch")["unused_labels"] == {"count": 1, "labels": ["zebra"], "as": "report"}
    assert "['zebra']" in caplog.text and "fetch.unused_labels: class" in caplog.text
    assert "labels on no region (not classes): zebra" in _printed(_report(tmp_path / "fetch"))
    asked = auto(make_params, source=str(source), annotations="annotations.xml", unused_labels="class")
    fetch(asked, tmp_path / "asked")
    assert found(tmp_path / "asked") == ["background", "cat", "zebra"]
    assert _report(tmp_path / "asked")["unused_labels"] == {"count": 1, "labels": ["zebra"], "as": "class"}
    assert _report(tmp_path / "asked")["classes"]["zebra"] == {"images": 0, "instances": 0}


def test_only_unused_labels_is_an_error_that_names_them(make_params, tmp_path):
    source = tmp_path / "cvat"
    write_image(source / "a.jpg")
    xml = (
        "<annotations><version>1.1</version><meta><task><labels><label><name>zebra</name></label>"
        '</labels></task></meta><image id="0" name="a.jpg" width="40" height="30"/></annotations>'
    )
    (source / "annotations.xml").write_text(xml)
    with pytest.raises(ConfigError) as raised:
        fetch(auto(make_params, source=str(source), annotations="annotations.xml"), tmp_path / "fetch")
    assert "['zebra'] are declared but on no region" in str(raised.value)
    assert "fetch.unused_labels: class" in str(raised.value)


def test_seagrass_declared_zostera_is_reported_not_a_class(make_params, tmp_path):
    """The real CVAT task export declares furcullaria and zostera; only furcullaria is drawn."""
    if not SEAGRASS.exists():
        pytest.skip(f"{SEAGRASS} is absent (the shared cvat-seagrass-polygons dataset)")
    fetch(auto(make_params, source=str(SEAGRASS), annotations="annotations.xml"), tmp_path / "fetch")
    assert found(tmp_path / "fetch") == ["background", "furcullaria"]
    report = _report(tmp_path / "fetch")
    assert report["unused_labels"] == {"count": 1, "labels": ["zostera"], "as": "report"}
    assert report["classes"]["furcullaria"] == {"images": 24, "instances": 35}
    assert report["uncovered_images"]["count"] == 0  # bare names, files in class sub-folders: all found
    assert "labels on no region (not classes): zostera" in _printed(report)


def test_cheetah_labelmap_classes_without_pixels_are_reported(make_params, tmp_path):
    """The real labelmap.txt lists 7 labels; the masks hold background and cheetah only."""
    if not CHEETAH.exists():
        pytest.skip(f"{CHEETAH} is absent (the shared cvat-segmask-cheetah dataset)")
    settings = {"source": str(CHEETAH), "annotations": "labelmap.txt", "images": "data/cheetah"}
    fetch(auto(make_params, **settings), tmp_path / "fetch")
    assert found(tmp_path / "fetch") == ["background", "cheetah"]
    assert _report(tmp_path / "fetch")["unused_labels"]["labels"] == ["fox", "hyena", "lion", "tiger", "wolf"]


def test_coco_categories_without_annotations_are_reported(make_params, tmp_path):
    """labelme's own COCO export declares 21 categories; its 12 annotations use 6."""
    if not LABELME_COCO.exists():
        pytest.skip(f"{LABELME_COCO} is absent (the shared labelme-examples dataset)")
    fetch(auto(make_params, source=str(LABELME_COCO), annotations="annotations.json"), tmp_path / "fetch")
    assert found(tmp_path / "fetch") == ["background", "bottle", "bus", "car", "chair", "person", "sofa"]
    unused = _report(tmp_path / "fetch")["unused_labels"]
    assert unused["count"] == 15 and unused["labels"][:3] == ["_background_", "aeroplane", "bicycle"]


def test_label_studio_image_level_tags_are_reported_not_classes(make_params, tmp_path):
    source = tmp_path / "ls"
    shutil.copytree(EXPORT, source)
    tasks = json.loads((source / "export.json").read_text())
    tag = {"id": "t1", "from_name": "scene", "to_name": "image", "type": "choices", "value": {"choices": ["outdoor"]}}
    tasks[0]["annotations"][0]["result"].append(tag)
    (source / "export.json").write_text(json.dumps(tasks))
    fetch(auto(make_params, source=str(source), annotations="export.json"), tmp_path / "fetch")
    assert found(tmp_path / "fetch") == LS_FOUND
    assert _report(tmp_path / "fetch")["unused_labels"]["labels"] == ["outdoor"]
    fetch(auto(make_params, source=str(source), annotations="export.json", unused_labels="class"), tmp_path / "two")
    assert found(tmp_path / "two") == sorted([*LS_FOUND, "outdoor"], key=lambda n: (n != "background", n))


def test_a_later_stage_reads_the_list_and_says_to_run_fetch_without_it(make_params, tmp_path):
    params = auto(make_params, source=str(EXPORT), annotations="export.json")
    missing = tmp_path / "artifacts" / "fetch" / CLASSES_FILE
    with pytest.raises(ConfigError) as raised:
        with_classes_file(params, missing)
    assert str(missing) in str(raised.value) and "run the fetch stage first" in str(raised.value)
    fetch(params, tmp_path / "artifacts" / "fetch")
    resolved = with_classes_file(params, missing)
    assert resolved.classes.names == LS_FOUND and resolved.unlabeled_value == 0


def test_typed_names_must_match_the_snapshot(via_dataset, make_params, tmp_path):
    params = make_params(fetch={"source": str(via_dataset)})
    fetch(params, tmp_path / "fetch")
    assert "as typed in params.yaml" in (tmp_path / "fetch" / CLASSES_FILE).read_text()
    assert with_classes_file(params, tmp_path / "fetch" / CLASSES_FILE) is params
    assert with_classes_file(params, tmp_path / "nowhere.yaml") is params  # typed: the file is optional
    changed = make_params(fetch={"source": str(via_dataset)}, classes={"names": ["background", "sky"], "palette": []})
    with pytest.raises(ConfigError, match="rerun the fetch stage"):
        with_classes_file(changed, tmp_path / "fetch" / CLASSES_FILE)


def test_nothing_found_or_a_palette_that_does_not_fit_is_an_error(make_params, tmp_path):
    ignore_all = {"label_map": {"*": "ignore"}}
    with pytest.raises(ConfigError, match="no class besides background"):
        fetch(auto(make_params, ignore_all, source=str(EXPORT), annotations="export.json"), tmp_path / "a")
    palette = {"palette": [[0, 0, 0], [1, 1, 1]]}
    with pytest.raises(ConfigError, match="palette has 2 colours for 7 classes"):
        fetch(auto(make_params, palette, source=str(EXPORT), annotations="export.json"), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_names_is_a_list_or_auto():
    assert ClassesParams(names="auto").names == "auto"
    for bad in ("everything", ["background"]):
        with pytest.raises(ValueError):
            ClassesParams(names=bad)


def test_stage_script_without_fetch_output_exits_with_the_fix(raw_params, tmp_path):
    raw_params["classes"].update(names="auto", palette=[])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    missing = tmp_path / "fetch" / CLASSES_FILE
    paths = ["--fetch", tmp_path / "fetch", "--out", tmp_path / "masks", "--report", tmp_path / "report"]
    command = [sys.executable, REPO_ROOT / "pipeline" / "rasterize.py", "--params", tmp_path / "params.yaml", *paths]
    done = subprocess.run([*map(str, command), "--classes", str(missing)], capture_output=True, text=True)
    assert done.returncode == 1
    output = " ".join((done.stdout + done.stderr).split())
    assert "classes.names is auto" in output and "run the fetch stage first" in output


def test_the_default_palette_fits_any_class_list_and_a_typed_list_must_fit(raw_params, via_dataset, tmp_path):
    """params.yaml's palette maps names to colours: auto names, or 2 or 9 classes, need no
    edit of it (named classes keep their colour, others get a default); a typed list of the
    wrong length is still an error."""
    default = raw_params["classes"]["palette"]
    assert isinstance(default, dict) and default["sky"] == [70, 130, 180]
    for names in (["background", "balloon"], [f"c{i}" for i in range(9)], ["background", "sky", "tree"]):
        classes = ClassesParams(names=names, palette=default)
        colours = classes.colours()
        assert len(colours) == len(names) and all(len(c) == 3 for c in colours)
    assert ClassesParams(names=["background", "sky", "tree"], palette=default).colours()[:2] == [
        (90, 90, 90),
        (70, 130, 180),
    ]
    with pytest.raises(ValueError, match="palette has 6 colours for 2 classes"):
        ClassesParams(names=["background", "balloon"], palette=[[0, 0, i] for i in range(6)])


def test_fetch_prints_the_class_list_as_yaml_that_parses_to_the_names_found(raw_params, via_dataset, tmp_path):
    raw_params["classes"]["names"] = "auto"  # the palette as shipped
    raw_params["fetch"]["source"] = str(via_dataset)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    out = tmp_path / "fetch"
    command = [sys.executable, REPO_ROOT / "pipeline" / "fetch.py", "--params", tmp_path / "params.yaml"]
    done = subprocess.run(
        [*map(str, command), "--out", str(out), "--cache", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout[done.stdout.index("# The classes in effect") :]
    assert yaml.safe_load(printed)["classes"]["names"] == found(out) and len(found(out)) >= 2
