"""The evaluate stage: score the trained model on the test split at each image's own size.

The checkpoint is scored through the registered model's own prediction path
(`segflow.registry.scoring.score`, the scorer `segflow promote` uses too), once per run,
against the original masks: what a user receives. Each mean has a 95% bootstrap interval
over the test images, and the number of images stands beside it.
Writes ``metrics.json`` (DVC metrics), ``per_image.csv``, ``confusion.json`` (one record
per truth/predicted class pair: pixels and share of the true class's pixels, drawn by
``dvc plots`` with the template ``.dvc/plots/confusion_share.json``), ``confusion.png``,
and ``best.png`` / ``worst.png`` (the test images the model does best and worst on, at full
resolution: image, truth, prediction, overlay); logs them all to the training run in MLflow
and records the scores on the registered version
(`segflow.registry.register.record_test_scores`: its ``test_*`` tags and the model card).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import mlflow
import numpy as np

from segflow.colours import palette
from segflow.config import Params
from segflow.inference.network import load_checkpoint
from segflow.outputs import atomic_dir
from segflow.prepared import read_test
from segflow.registry import tracking
from segflow.registry.pyfunc import SegmentationModel
from segflow.registry.register import record_test_scores
from segflow.registry.scoring import Scores, load_test_split, score
from segflow.training.dataset import class_pixel_counts
from segflow.training.trainer import select_device
from segflow.training.visualize import normalise_rows, save_confusion, save_grid

__all__ = ["majority_baseline", "evaluate", "confusion_records"]


def _clean(value: float) -> float | None:
    # JSON has no NaN: an undefined score (class absent from the split) is null.
    return None if math.isnan(value) else round(value, 5)


def majority_baseline(train_counts: np.ndarray, confusion: np.ndarray) -> float:
    """Test mIoU of predicting the training split's most common class everywhere, from the
    training class pixel counts and the test confusion (rows: the test pixels' truth)."""
    majority = int(np.argmax(train_counts))
    truth = np.asarray(confusion).sum(1)
    present = np.count_nonzero(truth)
    # Only the majority class can score: its IoU is its share of the labelled test pixels.
    iou = truth[majority] / truth.sum() if truth.sum() else 0.0
    return float(iou / present) if present else float("nan")


def _interval(pair: list[float]) -> list[float | None]:
    return [_clean(v) for v in pair] if pair else []


def evaluate(params: Params, preprocess_dir: Path, train_dir: Path, out_dir: Path, root: Path) -> dict:
    """Score the checkpoint on the test split at full resolution; returns the metrics written."""
    checkpoint = train_dir / "model.pt"
    net, meta = load_checkpoint(checkpoint)
    net.to(select_device(params.train.device))
    run = json.loads((train_dir / "run.json").read_text())
    names, ignore = list(meta.class_names), params.classes.ignore_index
    split = load_test_split(preprocess_dir)
    model = SegmentationModel().attach(net, meta.long_side, meta.tile, checkpoint.stat().st_size, meta.flip)
    scores = score(model, split, names, ignore, seed=params.seed)
    train_counts = class_pixel_counts(preprocess_dir, "train", len(names))
    confusion = np.array(scores.confusion)
    metrics = {
        "test": {
            "images": scores.images,
            "resolution": "original",
            "miou": _clean(scores.miou),
            "miou_ci95": _interval(scores.miou_ci),
            "mdice": _clean(scores.mdice),
            "mdice_ci95": _interval(scores.mdice_ci),
            "pixel_accuracy": _clean(scores.pixel_accuracy),
            "iou": {name: _clean(v) for name, v in zip(names, scores.iou)},
            "iou_ci95": {name: _interval(v) for name, v in zip(names, scores.iou_ci)},
            "dice": {name: _clean(v) for name, v in zip(names, scores.dice)},
            "ms_per_image": round(scores.ms_per_image, 1),
        },
        "majority_class_miou": _clean(majority_baseline(train_counts, confusion)),
    }
    if "cv" in run:  # train.folds > 1: the out-of-fold estimate beside the test score
        metrics["cv"] = {"folds": run["cv"]["folds"], "model": run["cv"]["model"]} | {
            key: _clean(run["cv"][key]) for key in ("miou_mean", "miou_std", "miou_pooled")
        }
    per_image = [
        {"filename": entry.filename, "miou": miou, "pixel_accuracy": accuracy}
        for entry, miou, accuracy in zip(split.entries, scores.per_image_miou, scores.per_image_accuracy)
    ]
    colours = palette(len(names), params.classes.colours(names))
    with atomic_dir(out_dir) as staging:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
        with (staging / "per_image.csv").open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=["filename", "miou", "pixel_accuracy"])
            writer.writeheader()
            writer.writerows(per_image)
        records = confusion_records(confusion, names)
        (staging / "confusion.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
        save_confusion(staging / "confusion.png", confusion, names)
        order = sorted(range(len(per_image)), key=lambda i: _sort_key(per_image[i]["miou"]))
        count = min(params.evaluate.examples, len(per_image))
        for name, chosen in (("worst", order[:count]), ("best", order[::-1][:count])):
            rows = []
            for i in chosen:
                image, truth = read_test(preprocess_dir, split.entries[i])
                caption = f"{split.entries[i].filename}   mIoU {per_image[i]['miou']:.3f}"
                rows.append((image, truth, model.predict_masks([image])[0], caption))
            if rows:
                save_grid(
                    staging / f"{name}.png", rows, names, colours, f"{name} {count} of {len(per_image)} test images"
                )
        _log(metrics, staging, run, root, params, scores, split.sha256, train_counts, confusion)
    return metrics


def _sort_key(value: float) -> float:
    return -1.0 if math.isnan(value) else value


def confusion_records(confusion: np.ndarray, names: list[str]) -> list[dict]:
    """The confusion matrix as DVC plot data: every (truth, predicted) pair, row by row,
    with its pixel count and its share of the true class's pixels (4 decimals)."""
    shares = normalise_rows(confusion)
    return [
        {
            "truth": names[t],
            "predicted": names[p],
            "pixels": int(confusion[t, p]),
            "share": round(float(shares[t, p]), 4),
        }
        for t in range(len(names))
        for p in range(len(names))
    ]


def _log(
    metrics: dict,
    folder: Path,
    run: dict,
    root: Path,
    params: Params,
    scores: Scores,
    split_sha256: str,
    train_counts: np.ndarray,
    confusion: np.ndarray,
) -> None:
    """Add the test scores and pictures to the training run, and record them on its version."""
    tracking.configure(root)
    test = metrics["test"]
    flat = {f"test_{key}": test[key] for key in ("miou", "mdice", "pixel_accuracy")}
    flat.update({f"test_iou_{name}": v for name, v in test["iou"].items()})
    flat["majority_class_miou"] = metrics["majority_class_miou"]
    if test["miou_ci95"]:
        flat["test_miou_ci95_low"], flat["test_miou_ci95_high"] = test["miou_ci95"]
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({k: v for k, v in flat.items() if v is not None})
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
    shares = (train_counts, np.asarray(confusion).sum(1))
    record_test_scores(params, run["model_version"], run["run_id"], scores, split_sha256, shares)
