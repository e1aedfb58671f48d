"""Segmentation metrics accumulated over a whole split.

A confusion matrix is summed over every image before any ratio is taken, so large and
small images weigh by their pixels, not as equal votes; per-class true/false positives and
false negatives are read off it and smp's `iou_score`/`f1_score` give the ratios. Pixels
labelled with the ignore index are left out.
"""

from __future__ import annotations

import numpy as np
import segmentation_models_pytorch as smp
import torch

__all__ = ["SegmentationMeter", "scores_from_confusion", "group_confusions"]


class SegmentationMeter:
    """Accumulates predictions and targets; reads out IoU, Dice and the confusion matrix."""

    def __init__(self, num_classes: int, ignore_index: int) -> None:
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: prediction and target (N, H, W) class indices."""
        prediction, target = prediction.cpu().long(), target.cpu().long()
        # The confusion matrix alone: the per-class counts the scores need follow from it
        # (`scores_from_confusion`), so smp.metrics.get_stats would count every pixel twice.
        valid = target != self.ignore_index
        pairs = target[valid] * self.num_classes + prediction[valid]
        self.confusion += np.bincount(pairs.numpy(), minlength=self.num_classes**2).reshape(
            self.num_classes, self.num_classes
        )

    def compute(self) -> dict[str, float | list[float]]:
        """Per-class IoU and Dice, their means, and pixel accuracy (see `scores_from_confusion`)."""
        return scores_from_confusion(self.confusion)


def group_confusions(confusions: np.ndarray, groups: list[str]) -> np.ndarray:
    """Per-image confusions (N, C, C) summed per group of near-duplicate images (`groups`:
    each image's key, as ``split.json`` records it) into (G, C, C), in order of first
    appearance: a bootstrap over these rows resamples groups, not images, so copies of one
    scene do not count as independent evidence."""
    if len(groups) != len(confusions):
        raise ValueError(f"{len(groups)} group keys for {len(confusions)} images")
    order = list(dict.fromkeys(groups))
    summed = np.zeros((len(order), *np.shape(confusions)[1:]), dtype=np.int64)
    for key, confusion in zip(groups, confusions):
        summed[order.index(key)] += confusion
    return summed


def scores_from_confusion(confusion: np.ndarray) -> dict[str, float | list[float]]:
    """Per-class IoU and Dice, their means, and pixel accuracy of a (C, C) confusion matrix
    (rows truth, columns predicted; ignored pixels already left out).

    A class with no pixels in the targets and none predicted has no defined score: it is
    NaN in the per-class lists and left out of the means.
    """
    confusion = torch.from_numpy(np.asarray(confusion, dtype=np.int64))
    tp = confusion.diagonal()
    fp, fn = confusion.sum(0) - tp, confusion.sum(1) - tp
    tn = confusion.sum() - tp - fp - fn
    iou = smp.metrics.iou_score(tp, fp, fn, tn, reduction="none", zero_division=float("nan"))
    dice = smp.metrics.f1_score(tp, fp, fn, tn, reduction="none", zero_division=float("nan"))
    total = int(confusion.sum())
    return {
        "iou": [float(v) for v in iou],
        "dice": [float(v) for v in dice],
        "miou": float(np.nanmean(iou.numpy())) if not torch.isnan(iou).all() else float("nan"),
        "mdice": float(np.nanmean(dice.numpy())) if not torch.isnan(dice).all() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
    }
