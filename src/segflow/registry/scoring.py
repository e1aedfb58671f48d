"""Scoring a model on the frozen test split at each image's own resolution: the one scorer.

The frozen split is the preprocess stage's ``test/`` folder (`segflow.prepared`): every test
image and mask at its original size, identified by one sha256 over the files, so every
comparison names the exact pixels it was made on. Models are scored through the pyfunc
(`segflow.registry.pyfunc`), i.e. as they are served, one image at a time (memory stays
bounded), with `segflow.metrics.SegmentationMeter`. The evaluate stage writes the result
(metrics.json, the version's ``test_*`` tags); `segflow promote` compares two of them.

Each mean comes with a 95% bootstrap interval (`BOOTSTRAP` resamples, seeded) over the test
split's groups of near-duplicate images (each image its own group when it has no
duplicate): with 18 test photos the interval says how far the mean could move with another
draw of photos, and copies of one scene do not count as independent evidence.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from segflow.errors import SegflowError
from segflow.metrics import SegmentationMeter, group_confusions, scores_from_confusion
from segflow.prepared import Entry, entries, groups, iter_test, test_sha256
from segflow.registry.pyfunc import SegmentationModel

__all__ = ["BOOTSTRAP", "TestSplit", "Scores", "load_test_split", "class_shares", "bootstrap", "score"]

#: Bootstrap resamples of the test images for the 95% intervals.
BOOTSTRAP = 1000


@dataclass(frozen=True)
class TestSplit:
    """The frozen test split: its entries (original sizes), read one image at a time."""

    folder: Path
    entries: list[Entry]
    sha256: str

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[tuple[Entry, np.ndarray, np.ndarray]]:
        return iter_test(self.folder)


@dataclass(frozen=True)
class Scores:
    """One model on one split. Per-class lists follow `class_names`; NaN = not defined
    (a class absent from the split and never predicted). ``*_ci`` are 95% bootstrap
    intervals over images, [low, high]."""

    class_names: list[str]
    miou: float
    mdice: float
    pixel_accuracy: float
    iou: list[float]
    dice: list[float]
    #: Pixel counts, rows truth, columns predicted.
    confusion: list[list[int]]
    images: int
    #: Wall time of the pyfunc's predict per test image, on this machine.
    ms_per_image: float
    checkpoint_bytes: int
    parameters: int
    miou_ci: list[float] = field(default_factory=list)
    mdice_ci: list[float] = field(default_factory=list)
    iou_ci: list[list[float]] = field(default_factory=list)
    #: mIoU and pixel accuracy of each test image alone, in split order.
    per_image_miou: list[float] = field(default_factory=list)
    per_image_accuracy: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        """JSON-ready: NaN becomes null, ratios keep 5 decimals."""

        def clean(value: object) -> object:
            if isinstance(value, float):
                return None if math.isnan(value) else round(value, 5)
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return {key: clean(value) for key, value in asdict(self).items()}


def load_test_split(preprocess_dir: Path) -> TestSplit:
    """The frozen test split and its sha256.

    Raises:
        SegflowError: it is missing or empty (the message says how to make it).
    """
    folder = Path(preprocess_dir)
    try:
        found = entries(folder, "test")
    except (OSError, KeyError, ValueError):
        raise SegflowError(
            f"test split not found in {folder}: run `dvc repro preprocess` (or `dvc pull`), or point "
            "--artifacts at the folder that holds preprocess/"
        ) from None
    if not found:
        raise SegflowError(f"test split {folder} holds no images: add photos or raise preprocess.test_fraction")
    return TestSplit(folder, found, test_sha256(folder))


def class_shares(counts: np.ndarray) -> list[float]:
    """Share of the labelled pixels that each class covers, from its pixel counts."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return (counts / total).tolist() if total else [float("nan")] * len(counts)


def bootstrap(confusions: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP) -> dict[str, object]:
    """95% intervals of mIoU, mean Dice and each class's IoU over images resampled with
    replacement; `confusions` (N, C, C) per image."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(confusions), size=(resamples, len(confusions)))
    mious, mdices, ious = [], [], []
    for draw in draws:
        values = scores_from_confusion(confusions[draw].sum(0))
        mious.append(values["miou"])
        mdices.append(values["mdice"])
        ious.append(values["iou"])

    def interval(samples: object) -> list[float]:
        samples = np.asarray(samples, dtype=np.float64)
        if np.isnan(samples).all(axis=0).any() if samples.ndim > 1 else np.isnan(samples).all():
            return [float("nan")] * 2 if samples.ndim == 1 else [[float("nan")] * 2] * samples.shape[1]
        low, high = np.nanpercentile(samples, [2.5, 97.5], axis=0)
        return [float(low), float(high)] if samples.ndim == 1 else [[float(a), float(b)] for a, b in zip(low, high)]

    return {"miou_ci": interval(mious), "mdice_ci": interval(mdices), "iou_ci": interval(ious)}


def score(
    model: SegmentationModel,
    split: TestSplit,
    class_names: list[str],
    ignore_index: int,
    seed: int = 0,
) -> Scores:
    """Predict every test image through `model` at its own size and score the masks.

    Raises:
        SegflowError: the split holds class values the model does not have.
    """
    num_classes = len(class_names)
    confusions, elapsed = [], 0.0
    for entry, image, truth in split:
        labelled = truth[truth != ignore_index]
        if labelled.size and int(labelled.max()) >= num_classes:
            raise SegflowError(
                f"test image {entry.filename} in {split.folder} has class value {int(labelled.max())}, but the "
                f"model knows {num_classes} classes {class_names}: the split was made for other classes; "
                "rerun `dvc repro` with the model's classes"
            )
        start = time.perf_counter()
        predicted = model.predict_masks([image])[0]
        elapsed += time.perf_counter() - start
        meter = SegmentationMeter(num_classes, ignore_index)
        meter.update(torch.from_numpy(predicted[None]), torch.from_numpy(truth[None]))
        confusions.append(meter.confusion)
    stack = np.stack(confusions)
    values = scores_from_confusion(stack.sum(0))
    per_image = [scores_from_confusion(c) for c in stack]
    return Scores(
        class_names=list(class_names),
        miou=values["miou"],
        mdice=values["mdice"],
        pixel_accuracy=values["pixel_accuracy"],
        iou=values["iou"],
        dice=values["dice"],
        confusion=stack.sum(0).tolist(),
        images=len(stack),
        ms_per_image=1000.0 * elapsed / max(len(stack), 1),
        checkpoint_bytes=model.checkpoint_bytes,
        parameters=model.parameters,
        **bootstrap(group_confusions(stack, groups(split.folder, "test")), seed),
        per_image_miou=[v["miou"] for v in per_image],
        per_image_accuracy=[v["pixel_accuracy"] for v in per_image],
    )
