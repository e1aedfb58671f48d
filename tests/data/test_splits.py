"""Drawn test and val splits that show every class the data allows (segflow.data.splits),
on synthetic records and on the real coins export through fetch -> rasterize -> preprocess."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from helpers import COINS

from segflow.config.auto_classes import with_classes_file
from segflow.data.fetch import CLASSES_FILE, fetch
from segflow.data.preprocess import preprocess
from segflow.data.rasterize import mask_name, rasterize
from segflow.data.records import ImageAnnotation, Region
from segflow.data.splits import assign_splits


def records(labels: list[set[str]], split: str | None = None) -> list[ImageAnnotation]:
    """One record per image showing `labels[i]` (a square per label)."""
    square = ((0.0, 0.0), (4.0, 0.0), (4.0, 4.0))
    return [
        ImageAnnotation(f"{i:02d}.jpg", tuple(Region(label, "polygon", square) for label in sorted(shown)), split=split)
        for i, shown in enumerate(labels)
    ]


def shown(labels: list[set[str]], indices: list[int]) -> set[str]:
    return set().union(*(labels[i] for i in indices))


def test_a_class_the_draw_leaves_out_of_test_and_val_is_swapped_in(caplog):
    # 20 photos of "cat", 3 of "dog": seed 3 draws no dog into test or val.
    labels = [{"cat"}] * 20 + [{"cat", "dog"}] * 3
    images = records(labels)
    plain = assign_splits(images, 0.15, 0.15, seed=3)
    assert "dog" not in shown(labels, plain["test"]) | shown(labels, plain["val"])
    with caplog.at_level(logging.INFO, logger="segflow.data.preprocess"):
        covered = assign_splits(images, 0.15, 0.15, seed=3, classes=labels)
    assert all(shown(labels, covered[split]) == {"cat", "dog"} for split in ("train", "val", "test"))
    assert {split: len(covered[split]) for split in covered} == {split: len(plain[split]) for split in plain}
    assert sorted(sum(covered.values(), [])) == list(range(len(images)))
    assert covered == assign_splits(images, 0.15, 0.15, seed=3, classes=labels)  # seeded
    assert "class(es) ['dog'] had no photo in the drawn test split: 1 training group(s) swapped in" in caplog.text
    assert "class(es) ['dog'] had no photo in the drawn val split: 1 training group(s) swapped in" in caplog.text


def test_training_keeps_a_class_and_no_split_loses_its_last_photo_of_one():
    # "dog" is on 2 photos: when the draw leaves both in train, one goes to test and one stays;
    # "bird" is on one photo only: it stays where the draw put it.
    labels = [{"cat"}] * 17 + [{"cat", "dog"}] * 2 + [{"bird"}]
    both_in_train = 0
    for seed in range(10):
        plain = assign_splits(records(labels), 0.15, 0.15, seed=seed)
        splits = assign_splits(records(labels), 0.15, 0.15, seed=seed, classes=labels)
        assert "dog" in shown(labels, splits["train"])
        if all(i in plain["train"] for i in (17, 18)):
            both_in_train += 1
            assert "dog" in shown(labels, splits["test"]) and "dog" not in shown(labels, splits["val"])
        where_bird = [split for split in plain if 19 in plain[split]]
        assert 19 in splits[where_bird[0]]
        for split in ("test", "val"):  # nothing the draw showed is lost
            assert shown(labels, plain[split]) <= shown(labels, splits[split])
    assert both_in_train >= 3


def test_groups_stay_whole_and_named_splits_keep_their_photos():
    labels = [{"cat"}] * 14 + [{"cat", "dog"}] * 4
    hashes = [f"g{i // 2}" for i in range(len(labels))]  # pairs of near duplicates
    splits = assign_splits(records(labels), 0.15, 0.15, seed=1, hashes=hashes, classes=labels)
    where = {i: split for split, indices in splits.items() for i in indices}
    assert all(where[i] == where[i + 1] for i in range(0, len(labels), 2))
    assert "dog" in shown(labels, splits["test"])
    # a test folder without a dog stays as the dataset named it; the drawn val split still gets one
    named = records(labels[:14], split="train") + records(labels[14:], split="train")
    named[0] = ImageAnnotation(named[0].filename, named[0].regions, split="test")
    named[1] = ImageAnnotation(named[1].filename, named[1].regions, split="test")
    splits = assign_splits(named, 0.15, 0.15, seed=0, classes=labels)
    assert splits["test"] == [0, 1]
    assert "dog" in shown(labels, splits["val"])


def test_the_coins_export_scores_every_class_it_can(make_params, tmp_path, caplog):
    """The real coins export (CVAT, 29 photos, 10 classes on 6 to 16 photos each): the draw
    of seed 1 left the 2-ruble coins and their digit '2' out of the test split (preprocess
    warned, and any pixel predicted as them scored their test IoU 0)."""
    if not COINS.exists():
        pytest.skip(f"{COINS} is absent (the shared cvat-coins-polygons dataset)")
    fetch_settings = {"source": str(COINS), "annotations": "annotations.xml", "bad_records": "skip"}
    params = make_params(
        seed=1, classes={"names": "auto", "palette": []}, fetch=fetch_settings, rasterize={"order": "area"}
    )
    fetch(params, tmp_path / "fetch")
    params = with_classes_file(params, tmp_path / "fetch" / CLASSES_FILE)
    rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    drawn = params.model_copy(update={"preprocess": params.preprocess.model_copy(update={"cover_classes": False})})
    with caplog.at_level(logging.INFO, logger="segflow.data.preprocess"):
        preprocess(drawn, tmp_path / "fetch", tmp_path / "masks", tmp_path / "drawn")
    assert "class '2_ruble' has no pixels in the test split" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="segflow.data.preprocess"):
        counts = preprocess(params, tmp_path / "fetch", tmp_path / "masks", tmp_path / "pre")
    assert counts == {"train": 21, "val": 4, "test": 4}
    assert "had no photo in the drawn test split" in caplog.text
    assert "has no pixels in the" not in caplog.text
    index = json.loads((tmp_path / "pre" / "split.json").read_text())
    names = params.classes.names
    for split in ("train", "val", "test"):
        present = set()
        for entry in index[split]:
            mask = cv2.imread(str(tmp_path / "masks" / mask_name(entry["filename"])), cv2.IMREAD_UNCHANGED)
            present |= {names[v] for v in np.unique(mask) if v < len(names)}
        assert present == set(names), (split, set(names) - present)
