import json

import numpy as np

from segflow.data.preprocess import preprocess, split_indices
from segflow.inference.segment import letterbox


def test_letterbox_keeps_aspect_and_pads_with_ignore():
    image = np.full((30, 60, 3), 200, np.uint8)
    mask = np.ones((30, 60), np.uint8)
    out_image, out_mask = letterbox(image, 32), letterbox(mask, 32, fill=255, nearest=True)
    assert out_image.shape == (32, 32, 3) and out_mask.shape == (32, 32)
    assert (out_mask == 1).sum() == 16 * 32  # 60x30 -> 32x16
    assert (out_mask[16:] == 255).all() and (out_image[16:] == 0).all()


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
    assert counts == {"train": 1, "val": 0, "test": 1}
    images = np.load(tmp_path / "pre" / "train_images.npy")
    masks = np.load(tmp_path / "pre" / "train_masks.npy")
    assert images.shape == (1, 32, 32, 3) and masks.shape == (1, 32, 32)
    # 40x30 -> 32x24: the bottom 8 rows are padding
    assert (masks[0, 24:] == 255).all() and (masks[0, :24] != 255).all()
    split = json.loads((tmp_path / "pre" / "split.json").read_text())
    assert {entry["filename"] for s in split.values() for entry in s} == {"a.jpg", "b.jpg"}
    # the fixture's a.jpg and b.jpg are byte-identical, and land in train and test
    duplicates = json.loads((tmp_path / "pre" / "duplicates.json").read_text())["cross_split"]
    assert [sorted(group["splits"]) for group in duplicates] == [["test", "train"]]


def test_named_splits_are_kept_and_test_carved_from_val():
    from segflow.data.preprocess import assign_splits
    from segflow.data.records import ImageAnnotation

    images = [ImageAnnotation(f"{n}.png", split="train" if n < 6 else "val") for n in range(10)]
    splits = assign_splits(images, 0.15, 0.15, seed=0)
    assert splits["train"] == list(range(6))  # Cityscapes' own train split, untouched
    assert sorted(splits["val"] + splits["test"]) == [6, 7, 8, 9] and len(splits["test"]) == 2
    mixed = images + [ImageAnnotation(f"free{n}.png") for n in range(4)]
    with_free = assign_splits(mixed, 0.25, 0.25, seed=0)
    assert set(range(6)) <= set(with_free["train"]) and with_free["test"]


def test_cross_split_duplicates_are_found():
    from segflow.data.preprocess import cross_split_duplicates

    files = [
        {"filename": "a.jpg", "sha256": "1"},
        {"filename": "b.jpg", "sha256": "1"},
        {"filename": "c.jpg", "sha256": "2"},
        {"filename": "d.jpg", "sha256": "2"},
    ]
    split_of = {"a.jpg": "train", "b.jpg": "test", "c.jpg": "train", "d.jpg": "train"}
    assert cross_split_duplicates(files, split_of) == [
        {"sha256": "1", "splits": {"train": ["a.jpg"], "test": ["b.jpg"]}}
    ]
