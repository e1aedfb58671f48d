"""The preprocess stage: letterbox every image and mask, split, store as arrays.

Output folder layout (read by `segflow.training.dataset`):

* ``{split}_images.npy``: (N, S, S, 3) uint8 RGB, ``S = preprocess.image_size``
* ``{split}_masks.npy``: (N, S, S) uint8 class indices; padding is the ignore index
* ``split.json``: per split, the image file names and their original sizes
* ``duplicates.json``: identical images (same sha256) that landed in different splits,
  which would leak test images into training; each is also logged as a warning

A split the annotations name (Cityscapes' train/val/test folders) is kept; the other
images are split at random (seeded) by ``preprocess.val_fraction`` / ``test_fraction``.

Arrays are stored uncompressed so training memory-maps them instead of decoding JPEGs
every epoch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from segflow.config import Params
from segflow.data.images import read_rgb
from segflow.data.rasterize import mask_name
from segflow.data.records import ImageAnnotation, read_annotations
from segflow.inference.segment import letterbox
from segflow.outputs import atomic_dir

__all__ = ["SPLITS", "split_indices", "assign_splits", "cross_split_duplicates", "preprocess"]

log = logging.getLogger(__name__)

#: Split names, in the order they are written.
SPLITS = ("train", "val", "test")


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> dict[str, list[int]]:
    """Deterministically assign `n` items to train/val/test.

    The test split gets at least one item when there are two or more, and the validation
    split (if asked for) one when there are three or more: a score over no images means
    nothing.
    """
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_fraction)) if n >= 2 else 0
    n_val = max(1, round(n * val_fraction)) if n >= 3 and val_fraction > 0 else 0
    return {
        "test": sorted(order[:n_test].tolist()),
        "val": sorted(order[n_test : n_test + n_val].tolist()),
        "train": sorted(order[n_test + n_val :].tolist()),
    }


def assign_splits(
    images: list[ImageAnnotation], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[int]]:
    """Indices of `images` per split: named splits kept, the rest drawn by `split_indices`.

    Cityscapes publishes no test labels: when the annotations name splits but none is
    test, half of the named val images (seeded) become the test split.
    """
    named = {split: [i for i, image in enumerate(images) if image.split == split] for split in SPLITS}
    free = [i for i, image in enumerate(images) if image.split not in SPLITS]
    drawn = split_indices(len(free), val_fraction, test_fraction, seed)
    splits = {split: sorted(named[split] + [free[j] for j in drawn[split]]) for split in SPLITS}
    if any(named.values()) and not splits["test"] and len(splits["val"]) >= 2:
        order = np.random.default_rng(seed).permutation(splits["val"]).tolist()
        splits["test"], splits["val"] = sorted(order[: len(order) // 2]), sorted(order[len(order) // 2 :])
    return splits


def cross_split_duplicates(files: list[dict], split_of: dict[str, str]) -> list[dict]:
    """Groups of identical images (manifest ``files`` entries, by sha256) in several splits."""
    groups: dict[str, dict[str, list[str]]] = {}
    for entry in files:
        if entry["filename"] in split_of:
            by_split = groups.setdefault(entry["sha256"], {})
            by_split.setdefault(split_of[entry["filename"]], []).append(entry["filename"])
    return [{"sha256": digest, "splits": by_split} for digest, by_split in groups.items() if len(by_split) > 1]


def preprocess(params: Params, fetch_dir: Path, masks_dir: Path, out_dir: Path) -> dict[str, int]:
    """Letterbox, split and store the dataset; returns the image count per split."""
    images = sorted(read_annotations(fetch_dir / "annotations.json"), key=lambda i: i.filename)
    size = params.preprocess.image_size
    ignore = params.classes.ignore_index
    splits = assign_splits(images, params.preprocess.val_fraction, params.preprocess.test_fraction, params.seed)
    index: dict[str, list[dict]] = {}
    with atomic_dir(out_dir) as staging:
        for split in SPLITS:
            members = splits[split]
            xs = np.zeros((len(members), size, size, 3), dtype=np.uint8)
            ys = np.zeros((len(members), size, size), dtype=np.uint8)
            index[split] = []
            for row, i in enumerate(tqdm(members, desc=f"preprocess {split}", unit="img")):
                record = images[i]
                image = read_rgb(fetch_dir / "images" / record.filename)
                mask = cv2.imread(str(masks_dir / mask_name(record.filename)), cv2.IMREAD_UNCHANGED)
                # The image exactly as inference will letterbox it; padding is never scored.
                xs[row] = letterbox(image, size)
                ys[row] = letterbox(mask, size, fill=ignore, nearest=True)
                height, width = mask.shape
                index[split].append({"filename": record.filename, "height": height, "width": width})
            np.save(staging / f"{split}_images.npy", xs)
            np.save(staging / f"{split}_masks.npy", ys)
        (staging / "split.json").write_text(json.dumps(index, indent=1))
        manifest = json.loads((fetch_dir / "manifest.json").read_text())
        split_of = {images[i].filename: split for split in SPLITS for i in splits[split]}
        duplicates = cross_split_duplicates(manifest["files"], split_of)
        for group in duplicates:
            log.warning("identical images in several splits (test leaks into training): %s", group["splits"])
        (staging / "duplicates.json").write_text(json.dumps({"cross_split": duplicates}, indent=1))
    return {split: len(splits[split]) for split in SPLITS}
