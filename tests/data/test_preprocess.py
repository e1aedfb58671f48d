import json
import logging
import shutil

import numpy as np
import pytest

from segflow.data.preprocess import preprocess, split_indices
from segflow.prepared import entries, read_plan, read_scaled, read_test


def test_split_is_deterministic_disjoint_and_complete():
    a = split_indices(100, 0.15, 0.15, seed=3)
    assert a == split_indices(100, 0.15, 0.15, seed=3)
    assert a != split_indices(100, 0.15, 0.15, seed=4)
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (70, 15, 15)
    assert sorted(a["train"] + a["val"] + a["test"]) == list(range(100))


def test_small_datasets_still_get_a_test_image():
    split = split_indices(3, 0.15, 0.15, seed=0)
    assert len(split["test"]) == 1 and len(split["val"]) == 1 and len(split["train"]) == 1


def test_stage_writes_arrays(via_dataset, make_params, tmp_path):
    from segflow.data.fetch import fetch
    from segflow.data.rasterize import rasterize

    params = make_params(
        fetch={"source": str(via_dataset)}, preprocess={"image_size": 32, "val_fraction": 0.0, "test_fraction": 0.5}
    )
    fetch(params, tmp_path / "fetch")
    rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    counts = preprocess(params, tmp_path / "fetch", tmp_path / "masks", tmp_path / "pre")
    # the fixture's a.jpg and b.jpg are byte-identical: one group, so both train (1 group: no test)
    assert counts == {"train": 2, "val": 0, "test": 0}
    # image_size 32 fixes crop and tile and a long side of 32: the 40x30 images become 32x24
    plan = read_plan(tmp_path / "pre")
    assert (plan.mode, plan.long_side, plan.crop, plan.tile) == ("fixed", 32, (32, 32), (32, 32))
    image, mask = read_scaled(tmp_path / "pre", entries(tmp_path / "pre", "train")[0])
    assert image.shape == (24, 32, 3) and mask.shape == (24, 32) and (np.asarray(mask) != 255).all()
    split = json.loads((tmp_path / "pre" / "split.json").read_text())
    assert {entry["filename"] for s in split.values() for entry in s} == {"a.jpg", "b.jpg"}
    duplicates = json.loads((tmp_path / "pre" / "duplicates.json").read_text())
    assert duplicates["cross_split"] == [] and [g["images"] for g in duplicates["grouped"]] == [["a.jpg", "b.jpg"]]


def test_named_splits_are_kept_and_a_missing_test_split_carved_from_train(caplog):
    from segflow.data.preprocess import assign_splits
    from segflow.data.records import ImageAnnotation

    images = [ImageAnnotation(f"{n}.png", split="train" if n < 16 else "val") for n in range(20)]
    with caplog.at_level(logging.INFO, logger="segflow"):
        splits = assign_splits(images, 0.15, 0.15, seed=0)
    assert splits["val"] == [16, 17, 18, 19]  # the dataset's own val split, untouched
    assert len(splits["test"]) == 3 and set(splits["test"]) < set(range(16))  # round(20 * 0.15), from train
    assert sorted(splits["train"] + splits["test"]) == list(range(16))
    assert splits == assign_splits(images, 0.15, 0.15, seed=0) and splits != assign_splits(images, 0.15, 0.15, seed=1)
    assert "no test folder: 3 of 16 training images carved as the test split" in caplog.text
    mixed = images + [ImageAnnotation(f"free{n}.png") for n in range(4)]
    with_free = assign_splits(mixed, 0.25, 0.25, seed=0)
    assert set(range(16, 20)) <= set(with_free["val"]) and with_free["test"]


def test_split_mode_random_ignores_folders_and_folders_needs_them():
    from segflow.data.preprocess import assign_splits
    from segflow.data.records import ImageAnnotation
    from segflow.errors import ConfigError

    images = [ImageAnnotation(f"{n}.png", split="train") for n in range(20)]
    assert assign_splits(images, 0.2, 0.2, seed=0, mode="random") == assign_splits(
        [ImageAnnotation(f"{n}.png") for n in range(20)], 0.2, 0.2, seed=0
    )
    with pytest.raises(ConfigError, match="preprocess.split is 'folders'.*set preprocess.split to auto or random"):
        assign_splits([ImageAnnotation("a.png"), ImageAnnotation("b.png")], 0.2, 0.2, seed=0, mode="folders")


@pytest.mark.parametrize("mode", ["auto", "random"])
def test_identical_images_share_a_split_whatever_the_seed(mode):
    from segflow.data.preprocess import assign_splits
    from segflow.data.records import ImageAnnotation

    images = [ImageAnnotation(f"{n}.png", split="test" if n == 14 else "train" if n < 10 else "") for n in range(40)]
    hashes = [f"h{n % 13}" for n in range(40)]  # 13 groups of identical images, across folders too
    for seed in range(20):
        splits = assign_splits(images, 0.2, 0.2, seed, mode=mode, hashes=hashes)
        split_of_hash: dict[str, set[str]] = {}
        for split, indices in splits.items():
            for i in indices:
                split_of_hash.setdefault(hashes[i], set()).add(split)
        assert all(len(found) == 1 for found in split_of_hash.values()), (seed, split_of_hash)
        assert sorted(i for indices in splits.values() for i in indices) == list(range(40))
    # "14.png" sits under test/ but is identical to the training image 1.png (and to 27.png): all train
    auto = assign_splits(images, 0.2, 0.2, 0, hashes=hashes)
    assert {1, 14, 27} <= set(auto["train"])


def test_exact_duplicates_under_two_names_never_cross_splits(tmp_path, make_params):
    """The issue's leak: x.png and x(1).png landed in train and test; now no hash is in two splits."""
    from helpers import VIA_HEADER, via_row, write_image

    from segflow.data.fetch import fetch
    from segflow.data.rasterize import rasterize

    source = tmp_path / "data"
    rows = [VIA_HEADER]
    for n in range(12):
        write_image(source / f"p{n}.png", value=10 * n)
        rows.append(via_row(f"p{n}.png", 1, 0, '{"name":"rect","x":0,"y":0,"width":9,"height":9}', '{"label":"car"}'))
    shutil.copyfile(source / "p3.png", source / "p3(1).png")  # the same photo saved twice
    shutil.copyfile(source / "p7.png", source / "copy of p7.png")
    rows += [via_row(name, 0, 0, "{}", "{}") for name in ("p3(1).png", "copy of p7.png")]
    (source / "via_region_data.csv").write_text("\n".join(rows) + "\n")
    digests = set()
    for seed in range(4):
        # "report": the flat test images are near duplicates of one another; exact copies are grouped anyway.
        params = make_params(
            seed=seed, fetch={"source": str(source)}, preprocess={"image_size": 32, "near_duplicates": "report"}
        )
        out = tmp_path / f"seed{seed}"
        manifest = fetch(params, out / "fetch")
        rasterize(params, out / "fetch", out / "masks")
        preprocess(params, out / "fetch", out / "masks", out / "pre")
        sha = {entry.filename: entry.sha256 for entry in manifest.files}
        split = json.loads((out / "pre" / "split.json").read_text())
        hashes = {name: {sha[e["filename"]] for e in entries} for name, entries in split.items()}
        assert not (
            hashes["train"] & hashes["val"] or hashes["train"] & hashes["test"] or hashes["val"] & hashes["test"]
        )
        assert sum(len(entries) for entries in split.values()) == 14
        digests.add(json.dumps(split, sort_keys=True))
    assert len(digests) > 1  # the seed does move the split: the test is not vacuous


def test_cross_split_duplicates_are_found():
    from segflow.data.manifest import ManifestFile
    from segflow.data.preprocess import cross_split_duplicates

    files = [
        ManifestFile(filename=name, width=8, height=8, regions=0, sha256=sha256, phash="0" * 16)
        for name, sha256 in (("a.jpg", "1"), ("b.jpg", "1"), ("c.jpg", "2"), ("d.jpg", "2"))
    ]
    split_of = {"a.jpg": "train", "b.jpg": "test", "c.jpg": "train", "d.jpg": "train"}
    assert cross_split_duplicates(files, split_of) == [
        {"sha256": "1", "splits": {"train": ["a.jpg"], "test": ["b.jpg"]}}
    ]


def test_the_test_split_is_kept_at_its_original_size(via_dataset, make_params, tmp_path):
    from segflow.data.fetch import fetch
    from segflow.data.rasterize import rasterize

    params = make_params(fetch={"source": str(via_dataset)}, preprocess={"split": "random", "test_fraction": 0.5})
    fetch(params, tmp_path / "fetch")
    rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    preprocess(params, tmp_path / "fetch", tmp_path / "masks", tmp_path / "pre")
    for entry in entries(tmp_path / "pre", "test"):
        image, mask = read_test(tmp_path / "pre", entry)
        assert image.shape == (entry.height, entry.width, 3) and mask.shape == (entry.height, entry.width)
    assert read_plan(tmp_path / "pre").mode == "auto"


def test_a_one_image_val_split_is_topped_up_from_train_with_a_warning(caplog):
    from segflow.data.preprocess import assign_splits
    from segflow.data.records import ImageAnnotation

    named = ["val" if n == 0 else "test" if n < 4 else "train" for n in range(16)]
    images = [ImageAnnotation(f"{n}.png", split=split) for n, split in enumerate(named)]
    with caplog.at_level(logging.WARNING, logger="segflow"):
        splits = assign_splits(images, 0.15, 0.15, seed=0, min_val=3)
    assert len(splits["val"]) == 3 and 0 in splits["val"]  # the dataset's own val image stays
    assert splits["test"] == [1, 2, 3] and len(splits["train"]) == 10
    assert sorted(sum(splits.values(), [])) == list(range(16))
    assert splits == assign_splits(images, 0.15, 0.15, seed=0, min_val=3)  # seeded
    assert (
        "the validation split held 1 image(s), fewer than 3 (max(preprocess.min_val_images 3, 10% of the 13 "
        "non-test images)): 2 training image(s) moved to it (seeded)" in caplog.text
    )
    assert "raise preprocess.val_fraction" in caplog.text
    caplog.clear()
    assert assign_splits(images, 0.15, 0.15, seed=0, min_val=0)["val"] == [0]  # 0: the split as the folders say
    assert not caplog.text


def test_the_val_top_up_follows_the_larger_of_the_key_and_a_tenth_and_keeps_groups_whole(caplog):
    from segflow.data.preprocess import assign_splits
    from segflow.data.records import ImageAnnotation

    # 60 training images in 30 pairs of duplicates, 1 val image: 10% of 61 wants 7, pairs make it 7 or 8.
    images = [ImageAnnotation(f"{n}.png", split="val" if n == 60 else "train") for n in range(61)]
    images += [ImageAnnotation(f"t{n}.png", split="test") for n in range(5)]
    hashes = [f"g{n // 2}" for n in range(61)] + [f"t{n}" for n in range(5)]
    splits = assign_splits(images, 0.15, 0.15, seed=0, hashes=hashes, min_val=3)
    assert 7 <= len(splits["val"]) <= 8
    val_groups = {hashes[i] for i in splits["val"]}
    assert not val_groups & {hashes[i] for i in splits["train"]}
    # Three images: training keeps as many as validation, so only one moves.
    few = [ImageAnnotation("a.png", split="train"), ImageAnnotation("b.png", split="train")]
    few += [ImageAnnotation("c.png", split="test")]
    with caplog.at_level(logging.WARNING, logger="segflow"):
        assert assign_splits(few, 0.15, 0.15, seed=0, min_val=3)["val"] in ([0], [1])
    assert "1 in all: training keeps at least as many" in caplog.text


def test_split_warnings_name_tiny_splits_and_missing_classes_with_the_fix():
    from segflow.data.preprocess import split_warnings

    counts = {"train": 20, "val": 2, "test": 5}
    present = {"train": {0, 1, 2}, "val": {0, 1, 2}, "test": {0, 1, 255}}
    warnings = split_warnings(counts, present, ["background", "car", "person"], 3)
    assert warnings == [
        "the val split holds 2 image(s), fewer than preprocess.min_val_images 3: the best checkpoint is chosen "
        "on them; add photos (to the val folder) or raise preprocess.val_fraction",
        "class 'person' has no pixels in the test split: its test IoU is undefined; add test photos that show it",
    ]
    assert split_warnings(counts, {split: {0, 1, 2} for split in counts}, ["background", "car", "person"], 0) == []


def test_the_stage_warns_about_empty_splits_and_a_class_it_cannot_learn(via_dataset, make_params, tmp_path, caplog):
    from segflow.data.fetch import fetch
    from segflow.data.rasterize import rasterize

    params = make_params(fetch={"source": str(via_dataset)}, preprocess={"image_size": 32})
    fetch(params, tmp_path / "fetch")
    rasterize(params, tmp_path / "fetch", tmp_path / "masks")
    with caplog.at_level(logging.WARNING, logger="segflow"):
        preprocess(params, tmp_path / "fetch", tmp_path / "masks", tmp_path / "pre")
    # a.jpg and b.jpg are identical: one group, all training; val and test are empty.
    assert "the val split holds 0 image(s), fewer than preprocess.min_val_images 3" in caplog.text
    assert "the test split holds 0 image(s)" in caplog.text
    assert "class 'building' has no pixels in the train split: the model cannot learn it" in caplog.text
