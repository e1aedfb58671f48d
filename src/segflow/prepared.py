"""The preprocess stage's output folder: its layout, written and read in one place.

    plan.json                      the working scale, training crop and inference tile
    split.json                     per split, one entry per image: filename (as fetched),
                                   original height and width, ``file``, its stem here, and
                                   ``group``, the key of the duplicates it shares a split with
    train/00000.image.npy ...      training and validation images at the working scale,
    train/00000.mask.npy ...       (h, w, 3) and (h, w) uint8, memory-mapped when read
    test/00000.image.png ...       the test split at its original size: the image as fetch
    test/00000.mask.png ...        decoded it (as stored: EXIF orientation ignored, lossless),
                                   and its mask, because scores are taken at each image's own size
    duplicates.json                identical (and near-identical) images, kept in one split

The test split is frozen by the sha256 of its files (`test_sha256`), so every comparison
names the exact pixels it was made on. Shared by training, the registry's scorer and the
export, so it imports no part of segflow (only the shared `segflow.outputs`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from segflow.outputs import Contract, read_contract, write_contract

__all__ = [
    "PLAN",
    "SPLIT_INDEX",
    "SPLITS",
    "Entry",
    "ClassObjects",
    "PlanRules",
    "Plan",
    "read_plan",
    "write_plan",
    "entries",
    "groups",
    "scaled_paths",
    "test_paths",
    "read_scaled",
    "read_test",
    "iter_test",
    "test_sha256",
]

PLAN = "plan.json"
SPLIT_INDEX = "split.json"
#: Split names, in the order they are written.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Entry:
    """One image of a split: its fetched name, original size and stem in the folder."""

    filename: str
    height: int
    width: int
    file: str


class ClassObjects(Contract):
    """One class's objects in the training masks (`segflow.data.plan`): how many were
    measured, how many were fragments, and their 5th-percentile and median "across" as a
    percentage of their image's long side (None: no object measured)."""

    objects: int
    fragments: int
    p5_across_pct: float | None
    median_across_pct: float | None


class PlanRules(Contract):
    """The params the plan followed (``preprocess.min_object_px`` and ``max_crop``)."""

    min_object_px: float
    max_crop: int


class Plan(Contract):
    """``plan.json``: the working scale, training crop and inference tile, and the
    measurements they were planned from (`segflow.data.plan.plan_scale`)."""

    #: "auto": planned from the data; "fixed": ``preprocess.image_size`` set them.
    mode: Literal["auto", "fixed"]
    images: int
    median_long_side: int
    median_aspect: float
    object_p5_across_pct: float | None
    classes: dict[str, ClassObjects]
    rules: PlanRules
    #: The working long side L (pixels): every image is resized so its longer side is L.
    long_side: int
    median_scale: float
    #: [height, width] of the training crops and of the inference tiles.
    crop: tuple[int, int]
    tile: tuple[int, int]
    limited_by: Literal["image_size", "median image", "small objects", "context"]


def read_plan(folder: Path) -> Plan:
    """The plan in the preprocess `folder` (or any folder holding a ``plan.json``)."""
    return read_contract(Plan, Path(folder) / PLAN)


def write_plan(plan: Plan, path: Path) -> None:
    """Write `plan` to the file `path` (``plan.json`` in a preprocess folder, or its copy)."""
    write_contract(plan, path)


def entries(folder: Path, split: str) -> list[Entry]:
    """The images of `split`, in their stored order."""
    index = json.loads((Path(folder) / SPLIT_INDEX).read_text())
    return [Entry(e["filename"], e["height"], e["width"], e["file"]) for e in index[split]]


def groups(folder: Path, split: str) -> list[str]:
    """Each image's duplicate group key in `split` (stored order); an image of a folder
    written before groups were recorded is a group of its own."""
    index = json.loads((Path(folder) / SPLIT_INDEX).read_text())
    return [e.get("group") or e["filename"] for e in index[split]]


def scaled_paths(folder: Path, entry: Entry) -> tuple[Path, Path]:
    """(image .npy, mask .npy) of a train or val entry, at the working scale."""
    base = Path(folder) / entry.file
    return base.with_name(base.name + ".image.npy"), base.with_name(base.name + ".mask.npy")


def test_paths(folder: Path, entry: Entry) -> tuple[Path, Path]:
    """(original image file, original mask PNG) of a test entry."""
    base = Path(folder) / entry.file
    return base.with_name(base.name + ".image.png"), base.with_name(base.name + ".mask.png")


def read_scaled(folder: Path, entry: Entry) -> tuple[np.ndarray, np.ndarray]:
    """(image (h, w, 3), mask (h, w)) uint8 at the working scale, memory-mapped."""
    image, mask = scaled_paths(folder, entry)
    return np.load(image, mmap_mode="r"), np.load(mask, mmap_mode="r")


def read_test(folder: Path, entry: Entry) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) RGB, mask (H, W)) uint8 of a test entry at its original size."""
    image_path, mask_path = test_paths(folder, entry)
    image = cv2.imread(str(image_path), cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION)
    mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
    if image is None or mask is None:
        raise FileNotFoundError(f"{image_path} or {mask_path} cannot be read: rerun `dvc repro preprocess`")
    return image, mask


def iter_test(folder: Path) -> Iterator[tuple[Entry, np.ndarray, np.ndarray]]:
    """Each test entry with its original image and mask, one at a time (bounded memory)."""
    for entry in entries(folder, "test"):
        yield (entry, *read_test(folder, entry))


def test_sha256(folder: Path) -> str:
    """One sha256 over every test file, in split order: identifies the frozen test split."""
    digest = hashlib.sha256()
    for entry in entries(folder, "test"):
        for path in test_paths(folder, entry):
            digest.update(path.read_bytes())
    return digest.hexdigest()
