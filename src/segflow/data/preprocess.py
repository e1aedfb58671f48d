"""The preprocess stage: letterbox every image and mask, split, store as arrays.

Output folder layout (read by `segflow.training.dataset`):

* ``{split}_images.npy``: (N, S, S, 3) uint8 RGB, ``S = preprocess.image_size``
* ``{split}_masks.npy``: (N, S, S) uint8 class indices; padding is the ignore index
* ``split.json``: per split, the image file names and their original sizes
* ``duplicates.json``: ``grouped``, the groups of identical images (same sha256) kept in
  one split; ``cross_split``, any that still landed in several (none, by construction)

The split (`segflow.data.splits`): the dataset's own train/val/test folders are kept
(``preprocess.split``), the other images split at random (seeded) by
``preprocess.val_fraction`` / ``test_fraction``; identical images always share a split.

Arrays are stored uncompressed so training memory-maps them instead of decoding JPEGs
every epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from segflow.config import Params
from segflow.data.images import read_rgb
from segflow.data.rasterize import mask_name
from segflow.data.records import SPLITS, read_annotations
from segflow.data.splits import assign_splits, cross_split_duplicates, split_indices
from segflow.inference.segment import letterbox
from segflow.outputs import atomic_dir

__all__ = ["SPLITS", "split_indices", "assign_splits", "cross_split_duplicates", "preprocess"]  # splits re-exported


def _identical(files: list[dict], split_of: dict[str, str]) -> list[tuple[dict, list[str]]]:
    """(first manifest entry, file names) per group of identical images in the split."""
    groups: dict[str, list[dict]] = {}
    for entry in files:
        if entry["filename"] in split_of:
            groups.setdefault(entry["sha256"], []).append(entry)
    return [(group[0], [e["filename"] for e in group]) for group in groups.values() if len(group) > 1]


def preprocess(params: Params, fetch_dir: Path, masks_dir: Path, out_dir: Path) -> dict[str, int]:
    """Letterbox, split and store the dataset; returns the image count per split."""
    images = sorted(read_annotations(fetch_dir / "annotations.json"), key=lambda i: i.filename)
    size = params.preprocess.image_size
    ignore = params.classes.ignore_index
    settings = params.preprocess
    manifest = json.loads((fetch_dir / "manifest.json").read_text())
    sha256 = {entry["filename"]: entry["sha256"] for entry in manifest["files"]}
    hashes = [sha256.get(image.filename, image.filename) for image in images]
    splits = assign_splits(
        images, settings.val_fraction, settings.test_fraction, params.seed, mode=settings.split, hashes=hashes
    )
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
        split_of = {images[i].filename: split for split in SPLITS for i in splits[split]}
        duplicates = cross_split_duplicates(manifest["files"], split_of)
        if duplicates:  # assign_splits keeps identical images together: this would be a bug
            raise RuntimeError(f"identical images in several splits: {duplicates}")
        grouped = [
            {"sha256": entry["sha256"], "split": split_of[entry["filename"]], "images": names}
            for entry, names in _identical(manifest["files"], split_of)
        ]
        (staging / "duplicates.json").write_text(json.dumps({"grouped": grouped, "cross_split": []}, indent=1))
    return {split: len(splits[split]) for split in SPLITS}
