"""segflow.data.near_duplicates: a photo saved again (resized, re-encoded, brightened) under
another name is reported with its distance, and kept in one split when asked."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import SHARED_DATASETS, VIA_HEADER, via_row

from segflow.data.fetch import fetch
from segflow.data.manifest import ManifestFile, read_manifest
from segflow.data.near_duplicates import group_keys, near_duplicate_pairs, split_keys
from segflow.data.records import read_annotations
from segflow.data.splits import assign_splits

BALLOON = SHARED_DATASETS / "via-heads-balloon" / "train"
_RECT = '{"name":"rect","x":2,"y":2,"width":20,"height":20}'


def _photo(n: int) -> np.ndarray:
    """A 64x48 'photo' of smooth random shapes, different for every n (BGR uint8)."""
    rng = np.random.default_rng(n)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return cv2.GaussianBlur(cv2.resize(coarse, (64, 48), interpolation=cv2.INTER_CUBIC), (5, 5), 0)


def _ten_photos(source: Path) -> tuple[Path, list[str]]:
    """`source` with p0..p9.png, each with a car rectangle; the VIA CSV rows so far."""
    source.mkdir()
    rows = [VIA_HEADER]
    for n in range(10):
        cv2.imwrite(str(source / f"p{n}.png"), _photo(n))
        rows.append(via_row(f"p{n}.png", 1, 0, _RECT, '{"label":"car"}'))
    return source, rows


@pytest.fixture
def with_copy(tmp_path):
    """Ten photos p0..p9.png and "p3 copy.jpg": p3 shrunk to 56x42, 8 levels brighter, JPEG quality 70."""
    source, rows = _ten_photos(tmp_path / "data")
    copy = cv2.resize(_photo(3), (56, 42), interpolation=cv2.INTER_AREA).astype(np.int16) + 8
    cv2.imwrite(str(source / "p3 copy.jpg"), np.clip(copy, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 70])
    rows.append(via_row("p3 copy.jpg", 0, 0, "{}", "{}"))
    (source / "via_region_data.csv").write_text("\n".join(rows) + "\n")
    return source


def test_an_altered_copy_is_reported_with_its_distance(with_copy, make_params, tmp_path):
    manifest = fetch(make_params(fetch={"source": str(with_copy)}), tmp_path / "fetch")
    report = json.loads((tmp_path / "fetch" / "report.json").read_text())
    [pair] = report["near_duplicates"]
    assert pair["images"] == ["p3 copy.jpg", "p3.png"] and 0 <= pair["distance"] <= 4
    assert manifest.model_dump(mode="json")["near_duplicates"] == report["near_duplicates"]
    assert report["duplicate_images"] == []  # not the same bytes: only the perceptual hash finds it
    assert all(len(entry.phash) == 16 for entry in manifest.files)
    # Unrelated photos lie far apart: the nearest two are well beyond the threshold.
    files = read_manifest(tmp_path / "fetch").files
    assert near_duplicate_pairs([e for e in files if e.filename != "p3 copy.jpg"], 10) == []


@pytest.mark.parametrize("mode", ["group", "report"])
def test_group_keeps_near_duplicates_in_one_split_for_every_seed(mode, with_copy, make_params, tmp_path):
    # The keys and the split preprocess uses (its stage test lives in test_preprocess.py).
    params = make_params(fetch={"source": str(with_copy)}, preprocess={"near_duplicates": mode})
    fetch(params, tmp_path / "fetch")
    manifest = read_manifest(tmp_path / "fetch")
    images = sorted(read_annotations(tmp_path / "fetch" / "annotations.json"), key=lambda i: i.filename)
    keys = split_keys(manifest, params.preprocess.near_duplicates)
    together = []
    for seed in range(8):
        splits = assign_splits(images, 0.15, 0.15, seed, hashes=[keys[image.filename] for image in images])
        split_of = {images[i].filename: name for name, indices in splits.items() for i in indices}
        together.append(split_of["p3 copy.jpg"] == split_of["p3.png"])
    # "report" leaves the split alone, so some seed parts them: the "group" result is not luck.
    assert all(together) if mode == "group" else not all(together)
    with pytest.raises(ValueError, match=r"preprocess.near_duplicates is 'merge'; choose from \['report', 'group'\]"):
        split_keys(manifest, "merge")


def test_pairs_and_groups_do_not_depend_on_file_order():
    def entry(filename: str, sha256: str, phash: str) -> ManifestFile:
        return ManifestFile(filename=filename, width=8, height=8, regions=0, sha256=sha256, phash=phash)

    files = [
        entry("a.jpg", "s1", "ffff000000000000"),
        entry("b.jpg", "s2", "ffff000000000003"),  # 2 bits from a
        entry("c.jpg", "s3", "ffff00000000000f"),  # 2 from b, 4 from a
        entry("a(1).jpg", "s1", "ffff000000000000"),  # identical to a: not a pair
        entry("d.jpg", "s4", "0000ffffffffffff"),
    ]
    pairs = near_duplicate_pairs(files, 2)
    assert [pair.model_dump(mode="json") for pair in pairs] == [
        {"images": ["a.jpg", "b.jpg"], "distance": 2},
        {"images": ["b.jpg", "c.jpg"], "distance": 2},
    ]
    shuffled = files[:]
    random.Random(0).shuffle(shuffled)
    assert near_duplicate_pairs(shuffled, 2) == pairs
    keys = group_keys(shuffled, pairs)
    assert {keys[name] for name in ("a.jpg", "a(1).jpg", "b.jpg", "c.jpg")} == {"s1"} and keys["d.jpg"] == "s4"


@pytest.mark.skipif(not BALLOON.exists(), reason="../shared/datasets/via-heads-balloon is not here")
def test_the_balloon_set_holds_two_recoloured_copies(make_params, tmp_path):
    params = make_params(
        classes={"names": ["background", "head"], "palette": []},
        fetch={"source": str(BALLOON), "annotations": "via_region_data.json", "default_label": "head"},
    )
    fetch(params, tmp_path / "fetch")
    report = json.loads((tmp_path / "fetch" / "report.json").read_text())
    assert report["near_duplicates"] == [
        {"images": ["14.jpg", "6.jpg"], "distance": 2},  # 190x201 and 597x636, colours shifted
        {"images": ["13.jpg", "5.jpg"], "distance": 4},
    ]


REAL_PHOTO = SHARED_DATASETS / "via-heads-balloon" / "train" / "21.jpg"


@pytest.mark.skipif(not REAL_PHOTO.exists(), reason="../shared/datasets/via-heads-balloon is not here")
def test_a_real_photo_and_its_shifted_resaved_copy_never_straddle_splits_by_default(make_params, tmp_path):
    """A 320x240 photo and the same frame 2 px over, JPEG quality 75, among ten others:
    preprocess, with params.yaml's defaults, keeps them in one split for every seed."""
    from segflow.data.preprocess import preprocess
    from segflow.data.rasterize import rasterize
    from segflow.prepared import groups

    source, rows = _ten_photos(tmp_path / "data")
    photo = cv2.imread(str(REAL_PHOTO))
    cv2.imwrite(str(source / "scene.png"), photo)
    shifted = np.roll(photo, (2, 2), axis=(0, 1))
    cv2.imwrite(str(source / "scene 2.jpg"), shifted, [cv2.IMWRITE_JPEG_QUALITY, 75])
    rows += [via_row(name, 1, 0, _RECT, '{"label":"person"}') for name in ("scene.png", "scene 2.jpg")]
    (source / "via_region_data.csv").write_text("\n".join(rows) + "\n")
    params = make_params(fetch={"source": str(source)}, preprocess={"image_size": 32})
    assert params.preprocess.near_duplicates == "group"  # the default
    fetch(params, tmp_path / "fetch")
    rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    parted = []
    for seed in range(6):
        for mode in ("group", "report"):
            changed = params.model_copy(
                update={"seed": seed, "preprocess": params.preprocess.model_copy(update={"near_duplicates": mode})}
            )
            out = tmp_path / f"pre-{seed}-{mode}"
            preprocess(changed, tmp_path / "fetch", tmp_path / "masks", out)
            split = json.loads((out / "split.json").read_text())
            split_of = {e["filename"]: name for name, found in split.items() for e in found}
            together = split_of["scene.png"] == split_of["scene 2.jpg"]
            if mode == "group":
                assert together, (seed, split_of)
                group_of = {e["filename"]: e["group"] for found in split.values() for e in found}
                assert group_of["scene.png"] == group_of["scene 2.jpg"]
                assert len(set(groups(out, split_of["scene.png"]))) == len(split[split_of["scene.png"]]) - 1
                [pair] = json.loads((out / "duplicates.json").read_text())["near_duplicates"]
                assert pair["images"] == ["scene 2.jpg", "scene.png"] and len(set(pair["splits"])) == 1
            else:
                parted.append(not together)
    assert any(parted)  # "report" parts them for some seed: "group" keeping them is not luck


def test_near_duplicates_the_dataset_folders_part_are_moved_to_one_split(make_params, tmp_path, caplog):
    """A photo under train/ and its altered copy under test/: the default moves the copy to train, and says so."""
    source = tmp_path / "data"
    rows = [VIA_HEADER]
    for n in range(10):
        folder = "train" if n < 6 else "val" if n < 8 else "test"
        (source / folder).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(source / folder / f"p{n}.png"), _photo(n))
        rows.append(via_row(f"{folder}/p{n}.png", 1, 0, _RECT, '{"label":"car"}'))
    copy = cv2.resize(_photo(3), (56, 42), interpolation=cv2.INTER_AREA).astype(np.int16) + 8
    cv2.imwrite(str(source / "test" / "p3 again.jpg"), np.clip(copy, 0, 255).astype(np.uint8))
    rows.append(via_row("test/p3 again.jpg", 1, 0, _RECT, '{"label":"car"}'))
    (source / "via_region_data.csv").write_text("\n".join(rows) + "\n")
    params = make_params(fetch={"source": str(source)})
    fetch(params, tmp_path / "fetch")
    manifest = read_manifest(tmp_path / "fetch")
    images = sorted(read_annotations(tmp_path / "fetch" / "annotations.json"), key=lambda i: i.filename)
    names = [image.filename for image in images]
    keys = split_keys(manifest, params.preprocess.near_duplicates)
    with caplog.at_level(logging.WARNING, logger="segflow"):
        splits = assign_splits(images, 0.15, 0.15, 0, hashes=[keys[name] for name in names])
    split_of = {names[i]: split for split, indices in splits.items() for i in indices}
    assert split_of["test/p3 again.jpg"] == split_of["train/p3.png"] == "train"
    assert split_of["test/p8.png"] == split_of["test/p9.png"] == "test"  # the rest of the folder split stands
    assert "near-duplicate images ['test/p3 again.jpg', 'train/p3.png'] sit in the ['test', 'train'] folders" in (
        caplog.text
    )
    assert "all moved to train" in caplog.text
