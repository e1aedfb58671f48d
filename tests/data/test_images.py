"""segflow.data.images: the pixels as stored, EXIF orientation ignored, on a real rotated photo."""

from __future__ import annotations

import json
import resource
import shutil

import cv2
import numpy as np
import pytest
import yaml
from helpers import REPO_ROOT, SHARED_DATASETS, peak_rss_mb, png_bomb, write_image
from PIL import Image

from segflow.data.fetch import fetch
from segflow.data.images import read_rgb
from segflow.data.rasterize import rasterize
from segflow.errors import ImageError
from segflow.pixel_limit import header_size, over_limit

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
    assert (manifest.files[0].width, manifest.files[0].height) == (207, 210)
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


# --- issue 22: decompression bombs, refused from the header before a pixel is decoded ---


def test_png_bomb_is_refused_from_its_header_naming_the_file_and_the_key(tmp_path):
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 5_000_000  # 900 MP of zeros in under 5 MB
    assert header_size(bomb) == (900_000_000, 1)  # over Pillow's own limit: it names only the product
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError) as raised:
        read_rgb(bomb, origin="via.csv row 2")
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    message = str(raised.value)
    assert f"{bomb} (named in via.csv row 2)" in message
    assert "900,000,000 pixels, over the limit of 100,000,000 (fetch.max_pixels)" in message
    assert raised.value.reason == "too many pixels"
    assert grown_mb < 100  # decoding it would take 2.7 GB


def test_the_limit_is_the_key_and_an_image_within_it_decodes(tmp_path):
    photo = write_image(tmp_path / "photo.png", width=300, height=200)
    assert header_size(photo) == header_size(photo.read_bytes()) == (300, 200)
    assert read_rgb(photo, max_pixels=60_000).shape == (200, 300, 3)  # exactly at the limit
    with pytest.raises(ImageError, match=r"300x200 = 60,000 pixels, over the limit of 59,999 \(fetch.max_pixels\)"):
        read_rgb(photo, max_pixels=59_999)
    assert over_limit(300, 200, 60_000, "serve.max_pixels") is None
    assert header_size(b"not an image") is None  # left to the decoder, which refuses it
    with pytest.raises(ImageError, match="not a decodable image"):
        (tmp_path / "junk.png").write_bytes(b"not an image")
        read_rgb(tmp_path / "junk.png")


def test_fetch_fails_on_a_bomb_or_with_bad_records_skip_drops_and_counts_it(via_dataset, make_params, tmp_path):
    png_bomb(via_dataset / "b.jpg", 1200, 1000)  # PNG bytes: formats are told by content, not name
    settings = {"source": str(via_dataset), "max_pixels": 1_000_000}
    out = tmp_path / "fetch"
    with pytest.raises(ImageError) as raised:
        fetch(make_params(fetch=settings), out)
    assert "b.jpg (named in via_region_data.csv row 4)" in str(raised.value)
    assert "1200x1000 = 1,200,000 pixels, over the limit of 1,000,000 (fetch.max_pixels)" in str(raised.value)
    assert "fetch.bad_records: skip" in str(raised.value) and not out.exists()
    fetch(make_params(fetch={**settings, "bad_records": "skip"}), out)
    report = json.loads((out / "report.json").read_text())
    assert report["dropped"]["counts"] == {"too many pixels": 1}
    assert "b.jpg" in report["dropped"]["examples"]["too many pixels"][0]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.jpg"]


def test_fetch_stage_refuses_the_issues_bomb_in_one_line_with_memory_bounded(raw_params, via_dataset, tmp_path):
    png_bomb(via_dataset / "b.jpg")  # 30000x30000: the issue's stage reached 5.4 GB and rose
    raw_params["fetch"]["source"] = str(via_dataset)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    command = [REPO_ROOT / "pipeline" / "fetch.py", "--params", tmp_path / "params.yaml"]
    done, peak_mb = peak_rss_mb([*command, "--out", tmp_path / "fetch", "--cache", tmp_path / "cache"], tmp_path)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    printed = " ".join((done.stdout + done.stderr).split())
    assert "900,000,000 pixels, over the limit of 100,000,000 (fetch.max_pixels)" in printed, printed
    assert peak_mb < 1500, peak_mb  # the decoded image alone would be 2,700 MB
    print(f"fetch stage on the 30000x30000 PNG bomb: peak {peak_mb:.0f} MB")
