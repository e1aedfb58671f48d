"""Cross-validation (`train.folds` K > 1, nnU-Net's default for small datasets).

The non-test images (the preprocess split's train and val, pooled) are partitioned into K
folds, near-duplicate groups whole (``split.json``'s group keys), seeded by params.seed;
the test split is never touched. Model k trains on the other K - 1 folds and is validated
on fold k, so every non-test image is scored once, out of fold, by a model that never saw
it: the cross-validation mIoU (mean and spread over the folds, and pooled over all
out-of-fold pixels). One model is registered: the ensemble of the K networks (their mean
softmax, `segflow.inference.network.SegmentationEnsemble`) or the best fold
(`train.fold_model`).

K = 1 is one fold: the preprocess split's own train and val, and params.seed itself, so a
run without folds trains exactly as it always did. ``train.folds: auto`` (the default) is 5
folds for a set whose train and val splits hold fewer than 50 photos, else 1 (`fold_count`);
a set that small whose masks hold many classes gets one model with 4x the optimizer steps
instead (``train.steps_per_epoch: auto``, `step_count`): the same budget, spent on steps.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from segflow.config import Params
from segflow.errors import ConfigError
from segflow.inference.graph import GraphOptions
from segflow.inference.network import SegmentationEnsemble, SegmentationNet, build_model
from segflow.metrics import scores_from_confusion
from segflow.prepared import Entry, entries, groups, scaled_paths

__all__ = [
    "Fold",
    "AUTO_FOLDS",
    "AUTO_BELOW",
    "MANY_CLASSES",
    "AUTO_STEPS",
    "LONG_STEPS",
    "mask_classes",
    "many_classes",
    "fold_count",
    "step_count",
    "fold_seed",
    "assign_folds",
    "make_folds",
    "fresh_progress",
    "interrupted_message",
    "fold_record",
    "cv_summary",
    "cv_metrics",
    "final_model",
]


@dataclass(frozen=True)
class Fold:
    """One of `count` train/val partitions: fold `index` (0-based) is validated on `val`."""

    index: int
    count: int
    train: tuple[Entry, ...]
    val: tuple[Entry, ...]
    seed: int

    @property
    def number(self) -> int:
        """1-based, as logs, metric names and history.csv show it."""
        return self.index + 1


#: ``train.folds: auto``: AUTO_FOLDS folds while the train and val splits hold fewer than
#: AUTO_BELOW photos, else one model. On the real sets of 20-31 photos (docs/benchmarks.md,
#: 3 seeds each) 3 folds against one model raised the mean test mIoU of coins 0.235 -> 0.338,
#: seagrass 0.718 -> 0.745 and the balloon heads 0.716 -> 0.881; 5 folds (nnU-Net's number)
#: against 3 took coins 0.398 -> 0.412 (every seed better), seagrass 0.741 -> 0.754 and the
#: balloon heads 0.879 -> 0.894, at 1.6-2.2x the 3 folds' time (minutes at that size). The
#: 102-photo sample keeps one model.
AUTO_FOLDS, AUTO_BELOW = 5, 50

#: Below AUTO_BELOW photos, a set whose train + val masks hold at least MANY_CLASSES classes
#: (background counted) spends the budget on steps, not folds: ``train.folds: auto`` gives it
#: one model and ``train.steps_per_epoch: auto`` LONG_STEPS steps per epoch (AUTO_STEPS
#: elsewhere), 4x one model's time where 5 folds take 5x. On coins (11 classes, 25 photos;
#: docs/benchmarks.md, 3 seeds) one model of 4x the steps scored 0.504 where 5 folds scored
#: 0.412; on seagrass and the balloon heads (2 classes each) 5 folds scored 0.754 and 0.894
#: where 4x the steps scored 0.716 and 0.741. No real set lies between 2 and 11 classes: 5 is
#: their geometric middle, and a set near it should measure both (bench/budget.py).
MANY_CLASSES, AUTO_STEPS, LONG_STEPS = 5, 16, 64


def mask_classes(folder: Path, ignore_index: int = 255) -> int:
    """How many classes the train and val masks of the preprocess folder show (not the
    ignore value): read from the stored masks, memory-mapped."""
    seen = np.zeros(256, bool)
    for split in ("train", "val"):
        for entry in entries(folder, split):
            mask = np.load(scaled_paths(folder, entry)[1], mmap_mode="r")
            seen |= np.bincount(np.asarray(mask).ravel(), minlength=256) > 0
    seen[ignore_index % 256] = False
    return int(seen.sum())


def many_classes(folder: Path, ignore_index: int = 255) -> bool:
    """Whether the preprocess folder holds a small set (train + val under AUTO_BELOW photos)
    of at least MANY_CLASSES classes: auto's folds and steps go to steps for it."""
    photos = len(groups(folder, "train")) + len(groups(folder, "val"))
    return photos < AUTO_BELOW and mask_classes(folder, ignore_index) >= MANY_CLASSES


def fold_count(folder: Path, folds: int | str, ignore_index: int = 255) -> int:
    """`train.folds` as a number for the preprocess folder: itself, or for auto AUTO_FOLDS
    (at most one per group of near duplicates) below AUTO_BELOW train + val photos, else 1;
    1 too for a small set of many classes (`many_classes`), which gets the steps instead."""
    if folds != "auto":
        return int(folds)
    keys = groups(folder, "train") + groups(folder, "val")
    if len(keys) >= AUTO_BELOW or many_classes(folder, ignore_index):
        return 1
    return max(1, min(AUTO_FOLDS, len(set(keys))))


def step_count(folder: Path, steps: int | str, folds: int | str, ignore_index: int = 255) -> int:
    """`train.steps_per_epoch` as a number: itself, or for auto LONG_STEPS where one model
    trains (`fold_count` 1) on a small set of many classes (`many_classes`), else AUTO_STEPS.
    K > 1 folds keep AUTO_STEPS: K models of 4x the steps would take 4K x one model's time."""
    if steps != "auto":
        return int(steps)
    if folds not in ("auto", 1):  # K > 1 folds by hand
        return AUTO_STEPS
    return LONG_STEPS if many_classes(folder, ignore_index) else AUTO_STEPS  # auto: then 1 fold


def fold_seed(seed: int, index: int, count: int) -> int:
    """The seed of fold `index` of `count` (initial weights, crops, augmentation): `seed`
    itself without folds; derived from (seed, index) with them, so the K models differ."""
    if count == 1:
        return seed
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] % 2**31)


def assign_folds(keys: Sequence[str], count: int, seed: int) -> list[int]:
    """Each image's fold (0..count-1) from its group key: groups shuffled by `seed`, then
    placed largest first on the fold holding the fewest images, so folds are near equal.

    Raises:
        ConfigError: fewer groups than folds (a fold would be empty).
    """
    sizes = Counter(keys)
    if len(sizes) < count:
        raise ConfigError(
            f"train.folds: {count} folds need at least {count} groups of non-duplicate images; "
            f"the train and val splits hold {len(sizes)}: lower train.folds"
        )
    names = sorted(sizes)
    shuffled = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    shuffled.sort(key=lambda key: -sizes[key])  # stable: equal sizes stay shuffled
    load, fold_of = [0] * count, {}
    for key in shuffled:
        fold = min(range(count), key=lambda f: (load[f], f))
        fold_of[key] = fold
        load[fold] += sizes[key]
    return [fold_of[key] for key in keys]


def make_folds(folder: Path, folds: int | str, seed: int, ignore_index: int = 255) -> list[Fold]:
    """The folds of the preprocess folder's non-test images (see the module doc): `folds`
    of them, or `fold_count`'s number for auto."""
    count = fold_count(folder, folds, ignore_index)
    if count == 1:
        return [Fold(0, 1, tuple(entries(folder, "train")), tuple(entries(folder, "val")), seed)]
    pooled = entries(folder, "train") + entries(folder, "val")
    keys = groups(folder, "train") + groups(folder, "val")
    assigned = assign_folds(keys, count, seed)
    return [
        Fold(
            index,
            count,
            tuple(e for e, f in zip(pooled, assigned) if f != index),
            tuple(e for e, f in zip(pooled, assigned) if f == index),
            fold_seed(seed, index, count),
        )
        for index in range(count)
    ]


def fresh_progress(folds: list[dict]) -> dict:
    """The progress of a fold about to start (the resume file's ``progress``), after the
    finished `folds` (`fold_record`s, best weights included: never trained again)."""
    return {
        "epoch": 0,
        "best_miou": -1.0,
        "best_epoch": 0,
        "best_model": None,
        "best_confusion": None,
        "history": [],
        "bad_epochs": 0,
        "folds": folds,
    }


def interrupted_message(progress: dict, folds: int, epochs: int) -> str:
    """The line an interrupted run ends with: where it stopped, and how to resume."""
    epoch, fold = progress["epoch"], len(progress["folds"]) + 1
    where = "" if folds == 1 else f" in fold {fold} of {folds}"
    resume = "" if not epoch else f" from epoch {epoch + 1}" + ("" if folds == 1 else f" of fold {fold}")
    return f"interrupted{where} after epoch {epoch} of {epochs}; rerun (dvc repro) to resume{resume}"


def fold_record(progress: dict, fold: Fold) -> dict:
    """What a finished fold leaves for the rest of the run (and the resume file): its best
    weights, their score and validation confusion, its history and size."""
    return {
        "fold": fold.number,
        "val_images": len(fold.val),
        "best_model": progress["best_model"],
        "best_miou": progress["best_miou"],
        "best_epoch": progress["best_epoch"],
        "confusion": progress["best_confusion"],
        "epochs_run": progress["epoch"],
        # With folds, history.csv's first column: the fold a row (an epoch) belongs to.
        "history": [({"fold": fold.number} if fold.count > 1 else {}) | row for row in progress["history"]],
    }


def cv_summary(records: list[dict], mode: str) -> dict:
    """The cross-validation scores: each fold's best validation mIoU (on images its model
    never trained on), their mean and spread, and the mIoU of all out-of-fold pixels pooled."""
    scores = [record["best_miou"] for record in records]
    pooled = np.sum([np.asarray(record["confusion"], np.int64) for record in records], axis=0)
    return {
        "folds": len(records),
        "model": mode,
        "miou_mean": statistics.fmean(scores),
        "miou_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
        "miou_min": min(scores),
        "miou_max": max(scores),
        "miou_pooled": scores_from_confusion(pooled)["miou"],
        "images": sum(record["val_images"] for record in records),
        "per_fold": [
            {key: record[key] for key in ("fold", "val_images", "best_miou", "best_epoch", "epochs_run")}
            for record in records
        ],
    }


def cv_metrics(summary: dict) -> dict[str, float]:
    """`cv_summary` as MLflow metrics: cv_miou_mean/std/min/max/pooled, foldK_best_val_miou."""
    flat = {f"cv_miou_{key}": summary[f"miou_{key}"] for key in ("mean", "std", "min", "max", "pooled")}
    flat.update({f"fold{f['fold']}_best_val_miou": f["best_miou"] for f in summary["per_fold"]})
    return flat


def final_model(records: list[dict], params: Params) -> tuple[SegmentationNet | SegmentationEnsemble, dict]:
    """The model to register, on the CPU, and its checkpoint fields (epoch, val_miou, ...).

    One fold: its best weights, as a run without folds. Several: `train.fold_model`
    ensemble = all K networks as one; best = the fold with the highest validation mIoU
    (the first on ties).
    """
    mode, names = params.train.fold_model, params.classes.names
    graph = GraphOptions.from_params(params.model)

    def network(record: dict) -> SegmentationNet:
        # The architecture alone: the weights, normalisation buffers included, are the fold's;
        # in training's memory layout, so the checkpoint holds the bytes training held.
        net = build_model(params.model.arch, params.model.encoder, len(names), graph=graph)
        if params.train.channels_last:
            net.to(memory_format=torch.channels_last)
        net.load_state_dict(record["best_model"])
        return net.eval()

    if len(records) == 1:
        only = records[0]
        return network(only), {"epoch": only["best_epoch"], "val_miou": only["best_miou"]}
    summary = cv_summary(records, mode)
    fields = {"folds": len(records), "fold_model": mode, "cv_miou_mean": summary["miou_mean"]}
    if mode == "best":
        best = max(records, key=lambda record: record["best_miou"])
        return network(best), {
            **fields,
            "fold": best["fold"],
            "epoch": best["best_epoch"],
            "val_miou": best["best_miou"],
        }
    # No image was held out from every member: the ensemble's own estimate is the CV mean.
    ensemble = SegmentationEnsemble([network(record) for record in records]).eval()
    return ensemble, {**fields, "epoch": None, "val_miou": summary["miou_mean"]}
