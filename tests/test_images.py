"""segflow.data.images: the pixels as stored, EXIF orientation ignored, on a real rotated photo."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from conftest import SHARED_DATASETS
from PIL import Image

from segflow.data.fetch import fetch
from segflow.data.images import read_rgb
from segflow.data.rasterize import rasterize
from segflow.errors import ImageError

BALLOON = SHARED_DATASETS / "via-heads-balloon" / "train"


def _contrast(image: np.ndarray, mask: np.ndarray) -> float:
    """Mean grey level of a 7-pixel ring around the mask minus that inside it."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float64)
    inside = mask > 0
    ring = cv2.dilate(inside.astype(np.uint8), np.ones((15, 15), np.uint8)).astype(bool) & ~inside
    return grey[ring].mean() - grey[inside].mean()


@pytest.mark.skipif(not BALLOON.exists(), reason="../shared/datasets/via-heads-balloon is not here")
def test_exif_rotated_photo_is_read_as_stored_which_is_what_via_annotated(make_params, tmp_path):
    """train/7.jpg carries EXIF Orientation 3 (180°); its head outline fits the stored pixels."""
    with Image.open(BALLOON / "7.jpg") as photo:
        assert photo.getexif().get(0x0112) == 3 and photo.size == (207, 210)
    source = tmp_path / "data"
    source.mkdir()
    shutil.copyfile(BALLOON / "7.jpg", source / "7.jpg")
    entries = json.loads((BALLOON / "via_region_data.json").read_text())
    only = {key: entry for key, entry in entries.items() if entry["filename"] == "7.jpg"}
    (source / "via_region_data.json").write_text(json.dumps(only))
    params = make_params(
        classes={"names": ["background", "head"], "palette": []},
        fetch={"source": str(source), "annotations": "via_region_data.json", "default_label": "head"},
    )
    manifest = fetch(params, tmp_path / "fetch")
    assert (manifest["files"][0]["width"], manifest["files"][0]["height"]) == (207, 210)
    rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    mask = cv2.imread(str(tmp_path / "masks" / "7.png"), cv2.IMREAD_UNCHANGED)
    image = read_rgb(tmp_path / "fetch" / "images" / "7.jpg")
    assert image.shape[:2] == mask.shape == (210, 207)
    # The dark hair fills the outline and the light background rings it (about 44 grey
    # levels apart) only in the stored view; turned as EXIF asks, the outline misses the head.
    assert _contrast(image, mask) > 30
    assert abs(_contrast(image[::-1, ::-1], mask)) < 10
    # The default of OpenCV (and browsers) applies the tag: that is the turned view.
    applied = cv2.imdecode(np.fromfile(BALLOON / "7.jpg", np.uint8), cv2.IMREAD_COLOR_RGB)
    assert np.abs(applied.astype(int) - image[::-1, ::-1]).mean() < np.abs(applied.astype(int) - image).mean() / 10


def test_unreadable_image_names_the_file_and_the_record(tmp_path):
    path = tmp_path / "x.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(ImageError, match=r"x\.jpg \(named in via\.csv row 3\): not a decodable image"):
        read_rgb(path, origin="via.csv row 3")
