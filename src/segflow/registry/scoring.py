"""Scoring a registered model on the frozen test split: what `segflow promote` compares.

The frozen split is the preprocess stage's ``test_images.npy`` + ``test_masks.npy``,
identified by the sha256 of the two files, so every comparison names the exact pixels
it was made on. Models are scored through the pyfunc (`segflow.registry.pyfunc`), i.e. as they
are served, with `segflow.metrics.SegmentationMeter`. This is the one scorer: the evaluate
stage writes its result (metrics.json, the version's ``test_*`` tags), `segflow promote`
compares two of them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from segflow.errors import SegflowError
from segflow.inference.segment import BATCH_SIZE
from segflow.metrics import SegmentationMeter
from segflow.outputs import file_sha256
from segflow.registry.pyfunc import SegmentationModel

__all__ = ["TEST_FILES", "TestSplit", "Scores", "load_test_split", "class_shares", "score"]

#: The frozen test split, inside the preprocess output folder.
TEST_FILES = ("test_images.npy", "test_masks.npy")


@dataclass(frozen=True)
class TestSplit:
    """images (N, S, S, 3) uint8, masks (N, S, S) uint8 (padding = ignore index)."""

    images: np.ndarray
    masks: np.ndarray
    sha256: str
    folder: Path


@dataclass(frozen=True)
class Scores:
    """One model on one split. Per-class lists follow `class_names`; NaN = not defined
    (a class absent from the split and never predicted)."""

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
    #: mIoU of each test image alone, in split order.
    per_image_miou: list[float] = field(default_factory=list)
    #: The predicted masks (N, S, S) uint8, for pictures; not part of `as_dict`.
    predictions: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        """JSON-ready: NaN becomes null, ratios keep 5 decimals; predictions left out."""

        def clean(value: object) -> object:
            if isinstance(value, float):
                return None if math.isnan(value) else round(value, 5)
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return {key: clean(getattr(self, key)) for key in self.__dataclass_fields__ if key != "predictions"}


def load_test_split(preprocess_dir: Path) -> TestSplit:
    """The frozen test split and its sha256.

    Raises:
        SegflowError: a file is missing (the message says how to make it).
    """
    paths = [Path(preprocess_dir) / name for name in TEST_FILES]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise SegflowError(
            f"test split not found ({', '.join(missing)}): run `dvc repro preprocess` (or "
            "`dvc pull`), or point --artifacts at the folder that holds preprocess/"
        )
    images, masks = (np.load(path, mmap_mode="r") for path in paths)
    return TestSplit(images, masks, file_sha256(*paths), Path(preprocess_dir))


def class_shares(masks: np.ndarray, num_classes: int, ignore_index: int) -> list[float]:
    """Share of the labelled pixels (ignore index left out) that each class covers."""
    counts = np.bincount(np.asarray(masks).ravel(), minlength=256)[:num_classes].astype(np.float64)
    total = counts.sum()
    return (counts / total).tolist() if total else [float("nan")] * num_classes


def score(model: SegmentationModel, split: TestSplit, class_names: list[str], ignore_index: int) -> Scores:
    """Predict every test image through `model` and score the masks.

    Raises:
        SegflowError: the split holds class values the model does not have.
    """
    masks = np.array(split.masks)  # a writable copy: torch wraps it
    labelled = masks[masks != ignore_index]
    if labelled.size and int(labelled.max()) >= len(class_names):
        raise SegflowError(
            f"test split {split.folder} has class value {int(labelled.max())}, but the model knows "
            f"{len(class_names)} classes {class_names}: the split was made for other classes; "
            "rerun `dvc repro` with the model's classes"
        )
    images = list(np.asarray(split.images))
    if not images:
        raise SegflowError(f"test split {split.folder} holds no images: add photos or raise preprocess.test_fraction")
    # Warm-up on one full batch: the first call of a batch shape pays one-off set-up costs.
    model.predict_masks(images[:BATCH_SIZE])
    start = time.perf_counter()
    predicted = model.predict_masks(images)
    elapsed = time.perf_counter() - start
    predictions = np.stack(predicted)
    meter = SegmentationMeter(len(class_names), ignore_index)
    per_image = []
    for one, truth in zip(predictions, masks):
        single = SegmentationMeter(len(class_names), ignore_index)
        single.update(torch.from_numpy(one[None]), torch.from_numpy(truth[None]))
        meter.add(single)
        per_image.append(single.compute()["miou"])
    values = meter.compute()
    return Scores(
        class_names=list(class_names),
        miou=values["miou"],
        mdice=values["mdice"],
        pixel_accuracy=values["pixel_accuracy"],
        iou=values["iou"],
        dice=values["dice"],
        confusion=meter.confusion.tolist(),
        images=len(images),
        ms_per_image=1000.0 * elapsed / max(len(images), 1),
        checkpoint_bytes=model.checkpoint_bytes,
        parameters=model.parameters,
        per_image_miou=per_image,
        predictions=predictions,
    )
