"""Train/val/test: the dataset's own split where it has one, else a seeded draw.

Three rules hold whatever ``preprocess.split`` says:

* A group always lands in one split: identical images (the same sha256 in the fetch
  manifest), and by default near duplicates too (``preprocess.near_duplicates: group``,
  see `segflow.data.near_duplicates`: video frames of one scene, re-saved copies), so a
  photo cannot be trained on and tested on under two names. Fractions count groups.
* Every class shows in the drawn test and val splits where the data allows: a class that
  a drawn split lacks, held by at least two training groups, is brought in by swapping a
  training group that holds it for one of that split's (seeded, logged), never taking
  from a split the last group that shows a class. A test split without a class scores
  it 0 on any pixel predicted as it (its IoU is otherwise undefined), and a val split
  without it chooses the checkpoint blind to it. Splits the dataset names keep their
  images.
* A validation split too small to choose a checkpoint by, fewer images than
  max(``preprocess.min_val_images``, `MIN_VAL_SHARE` of the non-test images), is topped up
  with training groups (seeded, logged), while training keeps at least as many images.
* Everything is a function of the images, their hashes and ``seed``: the same input gives
  the same split.

``preprocess.split``: ``folders`` keeps the split each record names (from its train/val/
test folder, see `segflow.data.collect`, or Cityscapes' own), ``random`` draws every
image, ``auto`` keeps named splits when any image has one. With named splits, images
without one are drawn; a named group whose members sit in several splits goes to the
first of train, val, test (a copy of a training image is no fair test), with a warning;
a missing test (or val) split is carved from train by ``test_fraction``
(``val_fraction``), seeded.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Collection, Sequence

import numpy as np

from segflow.data.manifest import ManifestFile
from segflow.data.records import SPLITS, ImageAnnotation
from segflow.errors import ConfigError

__all__ = [
    "SPLITS",
    "SPLIT_CHOICES",
    "MIN_VAL_SHARE",
    "split_indices",
    "assign_splits",
    "cross_split_duplicates",
]

log = logging.getLogger("segflow.data.preprocess")  # the stage's logger: its messages read as the stage's

#: At most this many training groups are tried as the one to bring a missing class into a
#: split (each against every group of the split): bounded work on thousands of photos.
COVER_TRIES = 20
#: Values of ``preprocess.split``.
SPLIT_CHOICES = ("auto", "random", "folders")
#: The validation split holds at least this share of the non-test images (nnU-Net's 5
#: folds hold 20%; below 10% a checkpoint is chosen on a handful of photos).
MIN_VAL_SHARE = 0.10


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


def _carve(groups: dict[str, list[int]], sizes: list[int], fractions: dict[str, float], seed: int) -> None:
    """Move groups (of `sizes` images each) from train into each empty split whose fraction
    is above 0 (in place)."""
    rng = np.random.default_rng(seed)
    total = len(sizes)
    for split in ("test", "val"):
        if groups[split] or fractions[split] <= 0 or len(groups["train"]) < 2:
            continue
        wanted = min(max(1, round(total * fractions[split])), len(groups["train"]) - 1)
        order = rng.permutation(len(groups["train"])).tolist()
        chosen = {groups["train"][j] for j in order[:wanted]}
        groups[split] = sorted(chosen)
        groups["train"] = [g for g in groups["train"] if g not in chosen]
        moved = sum(sizes[g] for g in chosen)
        log.info(
            "no %s folder: %d of %d training images carved as the %s split (seeded, preprocess.%s_fraction %s)",
            split,
            moved,
            moved + sum(sizes[g] for g in groups["train"]),
            split,
            split,
            fractions[split],
        )


def _cover_classes(
    by_group: dict[str, list[int]], holds: list[frozenset[str]], sizes: list[int], skip: set[str], seed: int
) -> None:
    """Swap training groups into the test and val splits (not those in `skip`) until each
    shows every class some two training groups hold, never leaving a split without a class
    it showed (in place; logged). `holds`: each group's classes; `sizes`: its images."""
    rng = np.random.default_rng([seed, 2])
    count = {split: Counter(c for g in by_group[split] for c in holds[g]) for split in SPLITS}
    rarity = count["train"] + count["val"] + count["test"]  # groups per class, all splits
    for split in ("test", "val"):
        if split in skip or not by_group[split]:
            continue
        before = {c for c, n in count[split].items() if n > 0}
        swaps = 0
        for wanted in sorted(rarity, key=lambda c: (rarity[c], c)):
            if count[split][wanted] or count["train"][wanted] < 2:
                continue
            donors = [g for g in by_group["train"] if wanted in holds[g]]
            for g in [donors[i] for i in rng.permutation(len(donors))[:COVER_TRIES]]:
                h = _swap_partner(g, by_group[split], holds, sizes, count["train"], count[split], rng)
                if h is not None:
                    break
            else:
                continue
            for source, target, group in (("train", split, g), (split, "train", h)):
                by_group[source].remove(group)
                by_group[target].append(group)
                count[source].subtract(holds[group])
                count[target].update(holds[group])
            swaps += 1
        by_group[split].sort()
        by_group["train"].sort()
        if swaps:
            log.info(
                "class(es) %s had no photo in the drawn %s split: %d training group(s) swapped in for as many of "
                "its own (seeded), so its scores cover every class",
                sorted({c for c, n in count[split].items() if n > 0} - before),
                split,
                swaps,
            )


def _swap_partner(
    g: int,
    members: list[int],
    holds: list[frozenset[str]],
    sizes: list[int],
    train: Counter,
    split: Counter,
    rng: np.random.Generator,
) -> int | None:
    """A group of `members` (a split's) to trade for training group `g` so that neither side
    loses the last group showing a class (`train`, `split`: groups per class); nearest in
    size to `g` first, ties seeded. None if there is none."""
    order = sorted(rng.permutation(len(members)).tolist(), key=lambda i: abs(sizes[members[i]] - sizes[g]))
    for h in (members[i] for i in order):
        if any(split[c] == 1 for c in holds[h] - holds[g]) or any(train[c] == 1 for c in holds[g] - holds[h]):
            continue
        return h
    return None


def _top_up_val(groups: list[list[int]], by_group: dict[str, list[int]], min_val: int, seed: int) -> None:
    """Move training groups into a validation split smaller than max(`min_val`,
    `MIN_VAL_SHARE` of the non-test images), seeded, while training keeps at least as many
    images as validation (in place; logged)."""
    size = lambda split: sum(len(groups[g]) for g in by_group[split])  # noqa: E731
    before, pool = size("val"), size("train") + size("val")
    wanted = max(min_val, math.ceil(MIN_VAL_SHARE * pool))
    if before >= wanted:
        return
    order = np.random.default_rng([seed, 1]).permutation(len(by_group["train"])).tolist()
    candidates = [by_group["train"][j] for j in order]
    moved: list[int] = []
    for g in candidates:
        if size("val") >= wanted:
            break
        if size("train") - len(groups[g]) < size("val") + len(groups[g]):
            continue  # training would hold fewer images than validation
        by_group["train"].remove(g)
        by_group["val"].append(g)
        moved.append(g)
    by_group["val"].sort()
    after = size("val")
    log.warning(
        "the validation split held %d image(s), fewer than %d (max(preprocess.min_val_images %d, %d%% of the %d "
        "non-test images)): %d training image(s) moved to it (seeded)%s; to choose the checkpoint on more photos, "
        "add photos to the val folder or raise preprocess.val_fraction",
        before,
        wanted,
        min_val,
        round(100 * MIN_VAL_SHARE),
        pool,
        after - before,
        "" if after >= wanted else f", {after} in all: training keeps at least as many",
    )


def _named_groups(
    images: Sequence[ImageAnnotation], groups: list[list[int]], keep: bool
) -> tuple[dict[str, list[int]], list[int]]:
    """(the groups each split's folders name, the groups left to draw); a group named in
    several splits goes to the first of train, val, test, with a warning. `keep`: False =
    every group is drawn."""
    named: dict[str, list[int]] = {split: [] for split in SPLITS}
    free: list[int] = []
    for g, indices in enumerate(groups):
        found = {images[i].split for i in indices} & set(SPLITS) if keep else set()
        if not found:
            free.append(g)
            continue
        chosen = next(split for split in SPLITS if split in found)
        if len(found) > 1:
            log.warning(
                "identical or near-duplicate images %s sit in the %s folders: all moved to %s (a copy of a "
                "training image is no test); move them into one folder to say where they belong",
                [images[i].filename for i in indices],
                sorted(found),
                chosen,
            )
        named[chosen].append(g)
    return named, free


def assign_splits(
    images: Sequence[ImageAnnotation],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    *,
    mode: str = "auto",
    hashes: Sequence[str] | None = None,
    min_val: int = 0,
    classes: Sequence[Collection[str]] | None = None,
) -> dict[str, list[int]]:
    """Indices of `images` per split, by the rules of the module docstring.

    Args:
        mode: ``preprocess.split``, one of `SPLIT_CHOICES`.
        hashes: each image's group key (its sha256, or its near-duplicate group's); equal
            keys share a split. None = every image is unique.
        min_val: ``preprocess.min_val_images``; 0 (or a `val_fraction` of 0) = no top-up.
        classes: each image's classes, for drawn test and val splits that show every class;
            None = drawn as they fall.
    """
    if mode not in SPLIT_CHOICES:
        raise ConfigError(f"preprocess.split is {mode!r}; choose from {list(SPLIT_CHOICES)}")
    named_any = any(image.split in SPLITS for image in images)
    if mode == "folders" and not named_any:
        raise ConfigError(
            "preprocess.split is 'folders', but no image sits below a train/val/test folder (nor has a "
            "split from its reader); set preprocess.split to auto or random"
        )
    keep = named_any and mode != "random"
    members: dict[str, list[int]] = {}
    for i, key in enumerate(hashes if hashes is not None else map(str, range(len(images)))):
        members.setdefault(key, []).append(i)
    groups = list(members.values())  # in order of first appearance
    named, free = _named_groups(images, groups, keep)
    drawn = split_indices(len(free), val_fraction, test_fraction, seed)
    by_group = {split: sorted(named[split] + [free[j] for j in drawn[split]]) for split in SPLITS}
    sizes = [len(g) for g in groups]
    if keep:
        counts = {split: sum(sizes[g] for g in named[split]) for split in SPLITS}
        log.info("kept the dataset's own split (preprocess.split: %s): %s", mode, counts)
        _carve(by_group, sizes, {"val": val_fraction, "test": test_fraction}, seed)
    if classes is not None:
        holds = [frozenset(c for i in indices for c in classes[i]) for indices in groups]
        _cover_classes(by_group, holds, sizes, {s for s in SPLITS if named[s]}, seed)
    if min_val > 0 and val_fraction > 0:
        _top_up_val(groups, by_group, min_val, seed)
    return {split: sorted(i for g in by_group[split] for i in groups[g]) for split in SPLITS}


def cross_split_duplicates(files: list[ManifestFile], split_of: dict[str, str]) -> list[dict]:
    """Groups of identical images (manifest ``files`` entries, by sha256) in several splits."""
    groups: dict[str, dict[str, list[str]]] = {}
    for entry in files:
        if entry.filename in split_of:
            by_split = groups.setdefault(entry.sha256, {})
            by_split.setdefault(split_of[entry.filename], []).append(entry.filename)
    return [{"sha256": digest, "splits": by_split} for digest, by_split in groups.items() if len(by_split) > 1]
