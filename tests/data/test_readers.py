"""The reader contract (`segflow.data.readers.base`) and its registry (`READERS`): the one
list of annotation formats that fetch.format, detection, fetch's checks and rasterize use."""

from __future__ import annotations

import importlib
import pkgutil
import re
from dataclasses import replace
from pathlib import Path
from typing import get_args

import pytest
from helpers import REPO_ROOT, write_image

from segflow.config import FetchParams
from segflow.data import readers
from segflow.data.collect import collect
from segflow.data.drops import Drops
from segflow.data.found_classes import declared_labels
from segflow.data.rasterize import draw_rules
from segflow.data.readers import READERS, detect_format, read_detected
from segflow.data.readers.base import Reader, ReadOptions, Source
from segflow.data.readers.mask_images import MaskRules
from segflow.data.records import ImageAnnotation, Region
from segflow.errors import AnnotationError

README = REPO_ROOT / "README.md"


def test_every_registered_name_is_a_fetch_format_and_nothing_else():
    names = [reader.name for reader in READERS]
    assert len(names) == len(set(names)), f"two readers share a name: {names}"
    accepted = get_args(FetchParams.model_fields["format"].annotation)
    assert accepted[0] == "auto"
    assert sorted(names) == sorted(accepted[1:]), (
        "segflow.config.data.AnnotationFormat must list exactly the names in segflow.data.readers.READERS"
    )


def test_every_reader_module_is_registered():
    """A format module whose `Reader` is not in READERS would never be detected or chosen."""
    defined = []
    for info in pkgutil.iter_modules(readers.__path__):
        module = importlib.import_module(f"segflow.data.readers.{info.name}")
        defined += [value for value in vars(module).values() if isinstance(value, Reader)]
    assert defined and all(reader in READERS for reader in defined)
    assert len(defined) == len(READERS)


def test_every_format_has_a_row_in_the_readme():
    section = README.read_text().split("## Your own data", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|") for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    header, *body = rows
    assert header[2].strip().startswith("`fetch.format`"), "the table's second column names the format"
    in_table = {name for row in body for name in re.findall(r"`(\w+)`", row[2])}
    names = {reader.name for reader in READERS}
    assert names - in_table == set(), "add a row to README's 'Your own data' table"
    assert in_table - names == set(), "the README names a format no reader has"


def test_detection_and_reading_agree_on_a_folder_of_two_layouts(tmp_path):
    """detect_format asks the same readers in the same order as read_detected."""
    (tmp_path / "gtFine").mkdir()
    (tmp_path / "SegmentationClass").mkdir()
    assert detect_format(tmp_path) == "masks"
    with pytest.raises(AnnotationError, match="no labelmap"):
        read_detected(tmp_path, "auto", "label")  # the masks reader, which names what is missing


def test_a_folder_of_images_without_the_mask_suffix_says_so(tmp_path):
    write_image(tmp_path / "a.jpg")
    with pytest.raises(AnnotationError, match=r"nor masks ending in fetch.mask_suffix '_mask'; point fetch"):
        read_detected(tmp_path, "auto", "label", masks=MaskRules(mask_suffix="_mask"))
    write_image(tmp_path / "a_mask.png")
    assert detect_format(tmp_path, masks=MaskRules(mask_suffix="_mask")) == "mask_images"


def test_a_folder_given_to_a_file_format_names_the_folder_formats(tmp_path):
    with pytest.raises(
        AnnotationError,
        match=r"is a folder, but coco reads one file; .* \['cityscapes', 'labelme', 'mask_images', 'masks'\]",
    ):
        read_detected(tmp_path, "coco", "label")


# --- a format added by registering its reader, and nothing else -------------------------


def _toy_records(source: Source, options: ReadOptions) -> list[ImageAnnotation]:
    """``<image> <label> <x> <y> <w> <h>`` per line: one rectangle each."""
    records = []
    for number, line in enumerate(source.path.read_text().splitlines(), 1):
        name, label, *box = line.split()
        geometry = dict(zip(("x", "y", "width", "height"), map(float, box), strict=True))
        region = Region(label=label, shape="rect", geometry=geometry, origin=f"line {number}")
        records.append(ImageAnnotation(filename=name, regions=(region,), origin=f"line {number}"))
    return records


TOY = Reader(
    name="toy",
    detect=lambda source: source.suffix == ".toy",
    read=_toy_records,
    pil_fill=True,
    labels=lambda path: ["car", "bus"],
)


@pytest.fixture
def toy_registered():
    """TOY appended to the registry (in place, as a format module's line would put it), then removed."""
    READERS.append(TOY)
    yield
    READERS[:] = [reader for reader in READERS if reader.name != "toy"]


@pytest.fixture
def toy_source(tmp_path) -> Path:
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / name)
    (tmp_path / "boxes.toy").write_text("a.jpg car 1 2 10 5\nb.jpg car 0 0 4 4\n")
    return tmp_path


def test_an_unregistered_format_is_refused(toy_source):
    with pytest.raises(AnnotationError, match=r"boxes\.toy: cannot tell the annotation format from the extension"):
        read_detected(toy_source / "boxes.toy", "auto", "label")
    with pytest.raises(AnnotationError, match="unknown annotation format 'toy'"):
        read_detected(toy_source / "boxes.toy", "toy", "label")


def test_a_registered_reader_is_detected_read_and_used_by_fetch_and_rasterize(toy_source, toy_registered, make_params):
    path = toy_source / "boxes.toy"
    assert detect_format(path) == "toy"
    fmt, records = read_detected(path, "auto", "label")
    assert fmt == "toy" and [r.filename for r in records] == ["a.jpg", "b.jpg"]
    assert records[0].regions[0].geometry == {"x": 1.0, "y": 2.0, "width": 10.0, "height": 5.0}
    assert read_detected(path, "toy", "label")[1] == records
    assert declared_labels(path, "toy") == ["car", "bus"]
    collected = collect(toy_source, FetchParams(annotations=Path("boxes.toy")), Drops())
    assert collected.formats == ["toy"] and collected.uncovered == ["c.jpg"]  # its records name their images
    params = make_params()
    assert draw_rules(params, "toy").fill == "pil"
    assert draw_rules(params, "toy+via_csv").fill == "opencv"
    READERS[-1] = replace(TOY, names_images=False)
    assert collect(toy_source, FetchParams(annotations=Path("boxes.toy")), Drops()).uncovered == []
