"""Mask-image datasets (CVAT's Segmentation mask 1.1 layout): colours to classes, the
export's own split, bad input, and the real cheetah export through fetch -> rasterize -> preprocess."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import SHARED_DATASETS, write_image
from PIL import Image

from segflow.data.drops import Drops
from segflow.data.fetch import fetch
from segflow.data.preprocess import preprocess
from segflow.data.rasterize import rasterize
from segflow.data.readers import detect_format, read_detected
from segflow.data.readers.masks import read_labelmap, read_masks
from segflow.errors import AnnotationError

CHEETAH = SHARED_DATASETS / "cvat-segmask-cheetah"

LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:250,50,83::\nroad:128,64,128::\n"
CAR, ROAD = (250, 50, 83), (128, 64, 128)


def colour_mask(path: Path, size: tuple[int, int] = (30, 40)) -> np.ndarray:
    """A 40x30 RGB mask: a 10x10 car square and a road band below it; returns the class indices."""
    rgb = np.zeros((*size, 3), np.uint8)
    rgb[0:10, 0:10] = CAR
    rgb[20:25, :] = ROAD
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    index = np.zeros(size, np.uint8)
    index[0:10, 0:10], index[20:25, :] = 4, 3  # car and road in params.yaml's classes
    return index


@pytest.fixture
def layout(tmp_path) -> Path:
    """A Segmentation mask 1.1 folder: a.jpg and b.png with colour masks, split files."""
    root = tmp_path / "export"
    write_image(root / "JPEGImages" / "a.jpg")
    (root / "labelmap.txt").write_text(LABELMAP)
    write_image(root / "JPEGImages" / "b.png")
    colour_mask(root / "SegmentationClass" / "a.png")
    colour_mask(root / "SegmentationClass" / "b.png")
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n\n")  # a trailing empty line
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("b")  # no final newline
    (root / "ImageSets" / "Segmentation" / "default.txt").write_text("a\nb\n")  # names no split
    return root


def test_labelmap_colours_in_file_order(layout):
    assert read_labelmap(layout / "labelmap.txt") == {(0, 0, 0): "background", CAR: "car", ROAD: "road"}


def test_detected_from_the_labelmap_or_the_folder(layout):
    assert detect_format(layout / "labelmap.txt") == detect_format(layout) == "masks"
    assert read_detected(layout, "auto", "label")[0] == "masks"


def test_one_mask_region_per_colour_and_the_split_files(layout):
    records = read_masks(layout / "labelmap.txt")
    assert [(r.filename, r.split) for r in records] == [("JPEGImages/a.jpg", "train"), ("JPEGImages/b.png", "val")]
    assert [(r.label, r.shape) for r in records[0].regions] == [(n, "mask") for n in ("background", "car", "road")]
    assert records[0].regions[1].origin == f"SegmentationClass/a.png colour {CAR}"


def test_masks_pass_through_fetch_and_rasterize_unchanged(layout, make_params, tmp_path):
    expected = colour_mask(layout / "SegmentationClass" / "a.png")
    params = make_params(fetch={"source": str(layout), "annotations": "labelmap.txt"})
    manifest = fetch(params, tmp_path / "fetch")
    assert manifest.format == "masks" and manifest.images == 2
    pixels = rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    assert pixels["car"] == 2 * 100 and pixels["road"] == 2 * 200 and pixels["background"] == 2 * (1200 - 300)
    mask = cv2.imread(str(tmp_path / "masks" / "JPEGImages" / "a.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(mask, expected)


def test_palette_masks_read_their_colours_and_voc_border_is_ignore(layout, make_params, tmp_path):
    indices = np.zeros((30, 40), np.uint8)
    indices[0:10, 0:10], indices[10, 0:10] = 1, 255  # a car and its VOC border
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, *CAR] + [0, 0, 0] * 253 + [224, 224, 192])
    image.save(layout / "SegmentationClass" / "a.png")
    params = make_params(fetch={"source": str(layout), "annotations": "labelmap.txt"})
    fetch(params, tmp_path / "fetch")
    pixels = rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    assert pixels["ignore"] == 10 and pixels["car"] == 100 + 100  # b.png's colour mask has a car too


def test_labelmap_elsewhere_with_fetch_images_naming_the_layout(layout, make_params, tmp_path):
    (layout / "labelmap.txt").rename(tmp_path / "labelmap.txt")  # beside the layout folder, as in the cheetah set
    params = make_params(fetch={"source": str(tmp_path), "annotations": "labelmap.txt", "images": layout.name})
    manifest = fetch(params, tmp_path / "fetch")
    assert sorted(f.filename for f in manifest.files) == ["export/JPEGImages/a.jpg", "export/JPEGImages/b.png"]


def _write(layout: Path, case: str) -> None:
    """Spoil `layout` as `case` says."""
    if case == "mask without image":
        colour_mask(layout / "SegmentationClass" / "c.png")
    elif case == "image without mask":
        write_image(layout / "JPEGImages" / "d.jpg")
    elif case == "mask of another size":
        colour_mask(layout / "SegmentationClass" / "a.png", size=(20, 40))
    elif case == "unknown colour":
        rgb = np.asarray(Image.open(layout / "SegmentationClass" / "a.png")).copy()
        rgb[5, 5] = (1, 2, 3)
        Image.fromarray(rgb).save(layout / "SegmentationClass" / "a.png")
    elif case == "split names no mask":
        (layout / "ImageSets" / "Segmentation" / "val.txt").write_text("b\nghost\n")


BAD = {  # case: message fragments
    "mask without image": ["SegmentationClass/c.png: the mask has no image", "JPEGImages/c.*"],
    "image without mask": ["JPEGImages/d.jpg: an image without a mask", "SegmentationClass/d.png"],
    "mask of another size": ["SegmentationClass/a.png (mask of", "JPEGImages/a.jpg)", "mask is 40x20, the image 40x30"],
    "unknown colour": ["SegmentationClass/a.png (mask of", "colours [(1, 2, 3)] are not in", "labelmap.txt"],
    "split names no mask": ["val.txt line 2: 'ghost' has no mask"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_names_the_files_and_leaves_nothing(case, layout, make_params, tmp_path):
    _write(layout, case)
    out = tmp_path / "artifacts" / "fetch"
    with pytest.raises(AnnotationError) as raised:
        fetch(make_params(fetch={"source": str(layout), "annotations": "labelmap.txt"}), out)
    for fragment in BAD[case]:
        assert fragment in str(raised.value)
    assert not out.exists() and list(out.parent.iterdir()) == []


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_counted_under_skip(case, layout):
    _write(layout, case)
    drops = Drops(strict=False)
    records = read_masks(layout, drops=drops)
    assert sum(drops.counts.values()) == 1
    assert {r.filename for r in records} <= {"JPEGImages/a.jpg", "JPEGImages/b.png"}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("background:0,0,0::\ncar:300,0,0::\n", "line 2: 'car:300,0,0::' is not 'label:r,g,b::'"),
        ("background:0,0,0::\ncar:0,0,0::\n", "line 2: colour (0, 0, 0) is 'background'"),
        ("# only a comment\n", "lists no label"),
    ],
)
def test_bad_labelmap_names_the_line(text, fragment, layout):
    (layout / "labelmap.txt").write_text(text)
    with pytest.raises(AnnotationError) as raised:
        read_masks(layout / "labelmap.txt")
    assert str(layout / "labelmap.txt") in str(raised.value) and fragment in str(raised.value)


def test_cheetah_export_through_fetch_rasterize_and_preprocess(make_params, tmp_path):
    if not CHEETAH.exists():
        pytest.skip(f"{CHEETAH} is absent (the shared cvat-segmask-cheetah dataset)")
    labels = read_labelmap(CHEETAH / "labelmap.txt")
    names = list(labels.values())
    assert names == ["background", "cheetah", "fox", "hyena", "lion", "tiger", "wolf"]
    params = make_params(
        classes={"names": names, "label_map": {}, "palette": [list(c) for c in labels]},
        # The labelmap sits at the repository's root, the layout in data/cheetah.
        fetch={"source": str(CHEETAH), "annotations": "labelmap.txt", "images": "data/cheetah"},
        preprocess={"image_size": 64},
    )
    manifest = fetch(params, tmp_path / "fetch")
    assert manifest.images == 75 and {(f.height, f.width) for f in manifest.files} == {(224, 224)}
    records = json.loads((tmp_path / "fetch" / "annotations.json").read_text())["images"]
    split_of = {Path(r["filename"]).stem: r["split"] for r in records}
    folder = CHEETAH / "data" / "cheetah"
    listed = {
        split: [s for s in (folder / f"ImageSets/Segmentation/{split}.txt").read_text().splitlines() if s]
        for split in ("train", "val")
    }
    assert {split: sorted(s for s, v in split_of.items() if v == split) for split in listed} == {
        split: sorted(stems) for split, stems in listed.items()
    }
    pixels = rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    assert pixels["cheetah"] > 0 and pixels["fox"] == 0 and pixels["ignore"] == 0
    for entry in manifest.files:  # each mask is its colour mask, colour for colour
        stem = Path(entry.filename).stem
        colours = np.asarray(Image.open(folder / "SegmentationClass" / f"{stem}.png").convert("RGB"))
        mask = cv2.imread(str(tmp_path / "masks" / Path(entry.filename).with_suffix(".png")), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(mask == 1, (colours == (224, 64, 64)).all(axis=-1))
        assert np.array_equal(mask == 0, (colours == 0).all(axis=-1))
    preprocess(params, tmp_path / "fetch", tmp_path / "masks", tmp_path / "pre")
    stems = {
        name: {Path(e["filename"]).stem for e in entries}
        for name, entries in json.loads((tmp_path / "pre" / "split.json").read_text()).items()
    }
    # val.txt is kept as it is; the missing test split is carved from train.txt's images.
    assert stems["val"] == set(listed["val"])
    assert stems["train"] | stems["test"] == set(listed["train"])
    assert stems["test"] and not stems["train"] & stems["test"]
