"""The preprocess stage: split, plan the working resolution from the data, store the images.

The output folder's layout is `segflow.prepared`'s: ``plan.json`` (`segflow.data.plan`:
working long side, training crop, inference tile, and what they were measured from),
``split.json``, the training and validation images and masks at the working resolution, one
``.npy`` pair per image (memory-mapped by training, so RAM stays bounded whatever the
dataset's size), and the test split at its original size. Also:

* ``duplicates.json``: ``grouped``, the groups of identical images (same sha256) kept in
  one split; ``cross_split``, any that still landed in several (none, by construction);
  ``near_duplicates``, fetch's pairs of similar images with the split of each (one split
  with ``preprocess.near_duplicates: group``, the default)

``split.json`` gives each image's ``group`` (the key it shares a split by), so scores can
be resampled by group rather than by image.

The split (`segflow.data.splits`): the dataset's own train/val/test folders are kept
(``preprocess.split``), the other images split at random (seeded) by
``preprocess.val_fraction`` / ``test_fraction``; identical images always share a split,
near duplicates too by default (``preprocess.near_duplicates: group``); drawn test and val
splits show every class the data allows (by the images' labels); a validation split under
``preprocess.min_val_images`` is topped up from train. The stage warns, with the
fix, about a val or test split under that minimum and about a class absent from a split.

Arrays are stored uncompressed so training memory-maps them instead of decoding JPEGs
every epoch. The plan is printed as a table by the stage script.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from segflow.config import IGNORE, Params
from segflow.data.images import read_rgb
from segflow.data.manifest import ManifestFile, read_manifest
from segflow.data.near_duplicates import split_keys
from segflow.data.plan import object_sizes, plan_scale
from segflow.data.rasterize import mask_name
from segflow.data.records import SPLITS, ImageAnnotation, read_annotations
from segflow.data.splits import assign_splits, cross_split_duplicates, split_indices
from segflow.inference.segment import rescale, working_factor
from segflow.outputs import atomic_dir
from segflow.prepared import PLAN, SPLIT_INDEX, Entry, Plan, scaled_paths, test_paths, write_plan

__all__ = [
    "SPLITS",
    "split_warnings",
    "split_indices",
    "assign_splits",
    "store",
    "plan_for",
    "cross_split_duplicates",
    "preprocess",
]  # splits re-exported


def _identical(files: list[ManifestFile], split_of: dict[str, str]) -> list[tuple[ManifestFile, list[str]]]:
    """(first manifest entry, file names) per group of identical images in the split."""
    groups: dict[str, list[ManifestFile]] = {}
    for entry in files:
        if entry.filename in split_of:
            groups.setdefault(entry.sha256, []).append(entry)
    return [(group[0], [e.filename for e in group]) for group in groups.values() if len(group) > 1]


log = logging.getLogger(__name__)


def split_warnings(
    counts: dict[str, int], present: dict[str, set[int]], names: list[str], min_images: int
) -> list[str]:
    """What is wrong with a split, each with its fix: a val or test split of fewer than
    `min_images` images (``preprocess.min_val_images``), a class with no pixels in a split.

    Args:
        counts: images per split.
        present: per split, the class values found in its masks.
    """
    warnings = []
    uses = {"val": "the best checkpoint is chosen on", "test": "the test scores and their intervals rest on"}
    for split, use in uses.items():
        if counts[split] < min_images:
            warnings.append(
                f"the {split} split holds {counts[split]} image(s), fewer than preprocess.min_val_images "
                f"{min_images}: {use} them; add photos (to the {split} folder) or raise preprocess.{split}_fraction"
            )
    fixes = {
        "train": "the model cannot learn it; add training photos that show it, or drop it from classes.names",
        "val": "its val IoU is undefined and it plays no part in choosing the checkpoint; add val photos that show it",
        "test": "its test IoU is undefined; add test photos that show it",
    }
    for value, name in enumerate(names):
        for split in SPLITS:
            if counts[split] and value not in present[split]:
                warnings.append(f"class {name!r} has no pixels in the {split} split: {fixes[split]}")
    return warnings


def preprocess(params: Params, fetch_dir: Path, masks_dir: Path, out_dir: Path) -> dict[str, int]:
    """Split, plan and store the dataset; returns the image count per split."""
    images = sorted(read_annotations(fetch_dir / "annotations.json"), key=lambda i: i.filename)
    settings = params.preprocess
    manifest = read_manifest(fetch_dir)
    sha256 = split_keys(manifest, settings.near_duplicates)  # identical (and near) images share a split
    hashes = [sha256.get(image.filename, image.filename) for image in images]
    splits = assign_splits(
        images,
        settings.val_fraction,
        settings.test_fraction,
        params.seed,
        mode=settings.split,
        hashes=hashes,
        min_val=settings.min_val_images,
        classes=_classes_shown(params, images) if settings.cover_classes else None,
    )
    train = tqdm([images[i] for i in splits["train"]], desc="measure train", unit="img")
    plan = plan_for(params, (cv2.imread(str(masks_dir / mask_name(r.filename)), cv2.IMREAD_UNCHANGED) for r in train))
    index: dict[str, list[dict]] = {}
    present: dict[str, set[int]] = {split: set() for split in SPLITS}
    with atomic_dir(out_dir) as staging:
        write_plan(plan, staging / PLAN)
        for split in SPLITS:
            (staging / split).mkdir()
            index[split] = []
            for row, i in enumerate(tqdm(splits[split], desc=f"preprocess {split}", unit="img")):
                record = images[i]
                image = read_rgb(fetch_dir / "images" / record.filename, max_pixels=params.fetch.max_pixels)
                mask = cv2.imread(str(masks_dir / mask_name(record.filename)), cv2.IMREAD_UNCHANGED)
                entry = Entry(record.filename, *mask.shape, f"{split}/{row:05d}")
                index[split].append(asdict(entry) | {"group": hashes[i]})
                present[split].update(int(v) for v in np.unique(mask))
                store(staging, split, entry, image, mask, plan.long_side)
        (staging / SPLIT_INDEX).write_text(json.dumps(index, indent=1))
        split_of = {images[i].filename: split for split in SPLITS for i in splits[split]}
        duplicates = cross_split_duplicates(manifest.files, split_of)
        if duplicates:  # assign_splits keeps identical images together: this would be a bug
            raise RuntimeError(f"identical images in several splits: {duplicates}")
        grouped = [
            {"sha256": entry.sha256, "split": split_of[entry.filename], "images": names}
            for entry, names in _identical(manifest.files, split_of)
        ]
        near = [
            pair.model_dump(mode="json") | {"splits": [split_of.get(n, "") for n in pair.images]}
            for pair in manifest.near_duplicates
        ]
        duplicates = {"grouped": grouped, "cross_split": [], "near_duplicates": near}
        (staging / "duplicates.json").write_text(json.dumps(duplicates, indent=1))
    counts = {split: len(splits[split]) for split in SPLITS}
    for warning in split_warnings(counts, present, list(params.classes.names), settings.min_val_images):
        log.warning(warning)
    return counts


def _classes_shown(params: Params, images: list[ImageAnnotation]) -> list[set[str]]:
    """Each image's classes, by its regions' labels (ignored labels left out)."""
    return [{params.classes.class_of(r.label) for r in image.regions if r.label} - {IGNORE} for image in images]


def store(folder: Path, split: str, entry: Entry, image: np.ndarray, mask: np.ndarray, long_side: int) -> None:
    """Write one image and mask in `segflow.prepared`'s layout: train and val resized to the
    working `long_side`, test kept at its own size (scores are taken there)."""
    if split == "test":
        image_path, mask_path = test_paths(folder, entry)
        cv2.imwrite(str(image_path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(mask_path), mask)
    else:
        image_path, mask_path = scaled_paths(folder, entry)
        factor = working_factor(*mask.shape, long_side)
        np.save(image_path, rescale(image, factor))
        np.save(mask_path, rescale(mask, factor, nearest=True))


def plan_for(params: Params, masks: Iterable[np.ndarray]) -> Plan:
    """Measure the training masks (one at a time) and plan the working resolution."""
    settings, names = params.preprocess, list(params.classes.names)
    sizes, objects = [], {}
    fragment = settings.min_object_px**2 / 2
    for mask in masks:
        sizes.append(mask.shape)
        for value, found in object_sizes(mask, len(names), fragment).items():
            objects.setdefault(value, []).extend(s / max(mask.shape) for s in found)  # relative to the long side
    unlabeled = [] if params.rasterize.unlabeled == "ignore" else [names.index(params.rasterize.unlabeled)]
    size = settings.image_size
    return plan_scale(
        sizes,
        objects,
        names,
        size if isinstance(size, (str, int)) else tuple(size),
        settings.min_object_px,
        settings.max_crop,
        background=unlabeled,
    )
