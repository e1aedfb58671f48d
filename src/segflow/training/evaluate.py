"""The evaluate stage: score the trained model on the test split, as it is served.

The checkpoint is scored through the registered model's own prediction path
(`segflow.registry.scoring.score`, the scorer `segflow promote` uses too), once per run.
Writes ``metrics.json`` (DVC metrics), ``per_image.csv``, ``confusion.json`` (one record
per truth/predicted class pair: pixels and share of the true class's pixels, drawn by
``dvc plots`` with the template ``.dvc/plots/confusion_share.json``), ``confusion.png``,
and ``best.png`` / ``worst.png`` (the test images the model does best and worst on: image,
truth, prediction, overlay); logs them all to the training run in MLflow and records the
scores on the registered version (`segflow.registry.register.record_test_scores`: its
``test_*`` tags and the model card). Scores are accumulated over the
whole split (see `segflow.metrics`).
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
from segflow.inference.segment import content_size
from segflow.outputs import atomic_dir
from segflow.registry import tracking
from segflow.registry.pyfunc import SegmentationModel
from segflow.registry.register import record_test_scores
from segflow.registry.scoring import Scores, load_test_split, score
from segflow.training.visualize import normalise_rows, save_confusion, save_grid

__all__ = ["majority_baseline", "evaluate", "confusion_records"]


def _clean(value: float) -> float | None:
    # JSON has no NaN: an undefined score (class absent from the split) is null.
    return None if math.isnan(value) else round(value, 5)


def majority_baseline(train_masks: np.ndarray, test_masks: np.ndarray, num_classes: int, ignore: int) -> float:
    """Test mIoU of predicting the training split's most common class everywhere."""
    train_counts = np.bincount(train_masks[train_masks != ignore].ravel(), minlength=num_classes)
    majority = int(train_counts.argmax())
    truth = test_masks[test_masks != ignore]
    present = np.unique(truth)
    # Only the majority class can score: its IoU is its share of the valid test pixels.
    iou = float((truth == majority).mean()) if truth.size else 0.0
    return iou / len(present) if len(present) else float("nan")


def evaluate(params: Params, preprocess_dir: Path, train_dir: Path, out_dir: Path, root: Path) -> dict:
    """Score the checkpoint on the test split; returns the metrics written."""
    checkpoint = train_dir / "model.pt"
    net, meta = load_checkpoint(checkpoint)
    run = json.loads((train_dir / "run.json").read_text())
    names, ignore = meta["class_names"], params.classes.ignore_index
    split = load_test_split(preprocess_dir)
    model = SegmentationModel().attach(net, meta["image_size"], checkpoint.stat().st_size)
    scores = score(model, split, names, ignore)
    images, masks, predictions = split.images, np.asarray(split.masks), scores.predictions
    train_masks = np.load(preprocess_dir / "train_masks.npy", mmap_mode="r")
    metrics = {
        "test": {
            "miou": _clean(scores.miou),
            "mdice": _clean(scores.mdice),
            "pixel_accuracy": _clean(scores.pixel_accuracy),
            "iou": {name: _clean(v) for name, v in zip(names, scores.iou)},
            "dice": {name: _clean(v) for name, v in zip(names, scores.dice)},
            "images": scores.images,
        },
        "majority_class_miou": _clean(majority_baseline(np.asarray(train_masks), masks, len(names), ignore)),
    }
    files = json.loads((preprocess_dir / "split.json").read_text())["test"]
    per_image = [
        {
            "filename": entry["filename"],
            "miou": miou,
            "pixel_accuracy": float(((p == m) & (m != ignore)).sum() / max(int((m != ignore).sum()), 1)),
        }
        for entry, miou, p, m in zip(files, scores.per_image_miou, predictions, masks)
    ]
    colours = palette(len(names), params.classes.palette)
    confusion = np.array(scores.confusion)
    with atomic_dir(out_dir) as staging:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
        with (staging / "per_image.csv").open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=["filename", "miou", "pixel_accuracy"])
            writer.writeheader()
            writer.writerows(per_image)
        records = confusion_records(confusion, names)
        (staging / "confusion.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
        save_confusion(staging / "confusion.png", confusion, names)
        order = sorted(range(len(files)), key=lambda i: per_image[i]["miou"])
        count = min(params.evaluate.examples, len(files))
        for name, chosen in (("worst", order[:count]), ("best", order[::-1][:count])):
            rows = []
            for i in chosen:
                # Show the photo, not the letterbox padding around it.
                h, w = content_size(files[i]["height"], files[i]["width"], images.shape[1])
                caption = f"{Path(files[i]['filename']).name}\nmIoU {per_image[i]['miou']:.3f}"
                rows.append((np.asarray(images[i][:h, :w]), masks[i][:h, :w], predictions[i][:h, :w], caption))
            if rows:
                save_grid(staging / f"{name}.png", rows, names, colours, f"{name} {count} test images")
        _log(metrics, staging, run, root, params, scores, split.sha256, (train_masks, masks))
    return metrics


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
    masks: tuple[np.ndarray, np.ndarray],
) -> None:
    """Add the test scores and pictures to the training run, and record them on its version."""
    tracking.configure(root)
    test = metrics["test"]
    flat = {f"test_{key}": test[key] for key in ("miou", "mdice", "pixel_accuracy")}
    flat.update({f"test_iou_{name}": v for name, v in test["iou"].items()})
    flat["majority_class_miou"] = metrics["majority_class_miou"]
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({k: v for k, v in flat.items() if v is not None})
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
    record_test_scores(params, run["model_version"], run["run_id"], scores, split_sha256, masks)
