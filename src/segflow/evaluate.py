"""The evaluate stage: score the trained model on the test split.

Writes ``metrics.json`` (DVC metrics), ``per_image.csv``, ``confusion.json`` (one record
per truth/predicted class pair: pixels and share of the true class's pixels, drawn by
``dvc plots`` with the template ``.dvc/plots/confusion_share.json``), ``confusion.png``,
and ``best.png`` / ``worst.png`` (the test images the model does best and worst on: image,
truth, prediction, overlay), and logs them all to the training run in MLflow. Scores are accumulated over the whole split (see `segflow.metrics`).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import mlflow
import numpy as np
import torch

from segflow import tracking
from segflow.config import Params
from segflow.dataset import load_split
from segflow.losses import build_loss
from segflow.metrics import SegmentationMeter
from segflow.model import SegmentationNet, load_checkpoint
from segflow.outputs import atomic_dir
from segflow.preprocess import content_size
from segflow.train import select_device
from segflow.visualize import normalise_rows, palette, save_confusion, save_grid

__all__ = ["majority_baseline", "predict", "evaluate", "confusion_records"]


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


@torch.no_grad()
def predict(
    model: SegmentationNet, images: np.ndarray, masks: np.ndarray, loss_fn: torch.nn.Module,
    batch_size: int, device: torch.device,
) -> tuple[np.ndarray, float]:
    """Predictions (N, H, W) uint8 for `images` (N, H, W, 3), and the mean loss against `masks`."""
    model.eval().to(device)
    predictions, total = [], 0.0
    for start in range(0, len(images), batch_size):
        batch = np.asarray(images[start : start + batch_size]).transpose(0, 3, 1, 2).astype(np.float32)
        logits = model(torch.from_numpy(batch).to(device)).float()
        target = torch.from_numpy(np.asarray(masks[start : start + batch_size])).long().to(device)
        total += loss_fn(logits, target).item() * len(batch)
        predictions.append(logits.argmax(1).cpu().numpy().astype(np.uint8))
    return np.concatenate(predictions), total / max(len(images), 1)


def evaluate(params: Params, preprocess_dir: Path, train_dir: Path, out_dir: Path, root: Path) -> dict:
    """Score the checkpoint on the test split; returns the metrics written."""
    model, meta = load_checkpoint(train_dir / "model.pt")
    run = json.loads((train_dir / "run.json").read_text())
    names, ignore = meta["class_names"], params.classes.ignore_index
    images, masks = load_split(preprocess_dir, "test")
    masks = np.asarray(masks)
    loss_fn = build_loss(params.train.loss, ignore)
    device = select_device(params.train.device)
    predictions, loss = predict(model, images, masks, loss_fn.to(device), params.train.batch_size, device)
    meter = SegmentationMeter(len(names), ignore)
    meter.update(torch.from_numpy(predictions), torch.from_numpy(masks))
    scores = meter.compute()
    split = json.loads((preprocess_dir / "split.json").read_text())["test"]
    per_image = []
    for i, entry in enumerate(split):
        single = SegmentationMeter(len(names), ignore)
        single.update(torch.from_numpy(predictions[i : i + 1]), torch.from_numpy(masks[i : i + 1]))
        one = single.compute()
        per_image.append({"filename": entry["filename"], "miou": one["miou"], "pixel_accuracy": one["pixel_accuracy"]})
    metrics = {
        "test": {
            "miou": _clean(scores["miou"]), "mdice": _clean(scores["mdice"]),
            "pixel_accuracy": _clean(scores["pixel_accuracy"]), "loss": _clean(loss),
            "iou": {name: _clean(v) for name, v in zip(names, scores["iou"])},
            "dice": {name: _clean(v) for name, v in zip(names, scores["dice"])},
            "images": int(len(images)),
        },
        "majority_class_miou": _clean(majority_baseline(np.asarray(load_split(preprocess_dir, "train")[1]), masks, len(names), ignore)),
    }
    colours = palette(len(names), params.classes.palette)
    with atomic_dir(out_dir) as staging:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
        with (staging / "per_image.csv").open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=["filename", "miou", "pixel_accuracy"])
            writer.writeheader()
            writer.writerows(per_image)
        records = confusion_records(meter.confusion, names)
        (staging / "confusion.json").write_text("[\n" + ",\n".join(json.dumps(r) for r in records) + "\n]\n")
        save_confusion(staging / "confusion.png", meter.confusion, names)
        order = sorted(range(len(split)), key=lambda i: per_image[i]["miou"])
        count = min(params.evaluate.examples, len(split))
        for name, chosen in (("worst", order[:count]), ("best", order[::-1][:count])):
            rows = []
            for i in chosen:
                # Show the photo, not the letterbox padding around it.
                h, w = content_size(split[i]["height"], split[i]["width"], images.shape[1])
                caption = f"{Path(split[i]['filename']).name}\nmIoU {per_image[i]['miou']:.3f}"
                rows.append((np.asarray(images[i][:h, :w]), masks[i][:h, :w], predictions[i][:h, :w], caption))
            if rows:
                save_grid(staging / f"{name}.png", rows, names, colours, f"{name} {count} test images")
        _log(metrics, staging, run, root)
    return metrics


def confusion_records(confusion: np.ndarray, names: list[str]) -> list[dict]:
    """The confusion matrix as DVC plot data: every (truth, predicted) pair, row by row,
    with its pixel count and its share of the true class's pixels (4 decimals)."""
    shares = normalise_rows(confusion)
    return [
        {"truth": names[t], "predicted": names[p], "pixels": int(confusion[t, p]), "share": round(float(shares[t, p]), 4)}
        for t in range(len(names)) for p in range(len(names))
    ]


def _log(metrics: dict, folder: Path, run: dict, root: Path) -> None:
    """Add the test scores and pictures to the training run and its model version."""
    tracking.configure(root)
    test = metrics["test"]
    flat = {f"test_{key}": test[key] for key in ("miou", "mdice", "pixel_accuracy", "loss")}
    flat.update({f"test_iou_{name}": v for name, v in test["iou"].items()})
    flat["majority_class_miou"] = metrics["majority_class_miou"]
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({k: v for k, v in flat.items() if v is not None})
        mlflow.log_artifacts(str(folder), artifact_path="evaluation")
    client = mlflow.MlflowClient()
    client.set_model_version_tag(run["model_name"], run["model_version"], "test_miou", str(test["miou"]))
