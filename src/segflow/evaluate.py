"""The evaluate stage: score the trained model on the test split.

Writes ``metrics.json`` (DVC metrics), ``confusion.json`` and ``confusion.png``, and
``overlays/*.png`` (DVC plots), and logs all of them to the training run in MLflow.
Scores are accumulated over the whole split (see `segflow.metrics`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import mlflow
import numpy as np
import torch
from torch.utils.data import DataLoader

from segflow import tracking
from segflow.config import Params
from segflow.dataset import SegmentationDataset, load_split
from segflow.losses import build_loss
from segflow.model import load_checkpoint
from segflow.outputs import atomic_dir
from segflow.preprocess import content_size
from segflow.train import evaluate_loader, select_device
from segflow.visualize import save_confusion, save_panel

__all__ = ["majority_baseline", "evaluate"]


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
    model, meta = load_checkpoint(train_dir / "model.pt")
    run = json.loads((train_dir / "run.json").read_text())
    names, ignore = meta["class_names"], params.classes.ignore_index
    device = select_device(params.train.device)
    model.to(device)
    images, masks = load_split(preprocess_dir, "test")
    loader = DataLoader(SegmentationDataset(images, masks), batch_size=params.train.batch_size)
    loss, meter = evaluate_loader(model, loader, build_loss(params.train.loss, ignore), len(names), ignore, device)
    scores = meter.compute()
    train_masks = load_split(preprocess_dir, "train")[1]
    metrics = {
        "test": {
            "miou": _clean(scores["miou"]),
            "mdice": _clean(scores["mdice"]),
            "pixel_accuracy": _clean(scores["pixel_accuracy"]),
            "loss": _clean(loss),
            "iou": {name: _clean(v) for name, v in zip(names, scores["iou"])},
            "dice": {name: _clean(v) for name, v in zip(names, scores["dice"])},
            "images": int(len(images)),
        },
        "majority_class_miou": _clean(majority_baseline(np.asarray(train_masks), np.asarray(masks), len(names), ignore)),
    }
    with atomic_dir(out_dir) as staging:
        (staging / "metrics.json").write_text(json.dumps(metrics, indent=1))
        (staging / "confusion.json").write_text(
            json.dumps({"classes": names, "rows_truth_cols_predicted": meter.confusion.tolist()})
        )
        save_confusion(staging / "confusion.png", meter.confusion, names)
        overlays = staging / "overlays"
        overlays.mkdir()
        split = json.loads((preprocess_dir / "split.json").read_text())["test"]
        with torch.no_grad():
            for i in range(min(params.evaluate.overlays, len(images))):
                image = np.asarray(images[i])
                x = torch.from_numpy(image.transpose(2, 0, 1)[None].astype(np.float32)).to(device)
                prediction = model(x).argmax(1)[0].cpu().numpy().astype(np.uint8)
                # Show the photo, not the letterbox padding around it.
                h, w = content_size(split[i]["height"], split[i]["width"], image.shape[0])
                name = Path(split[i]["filename"]).stem
                save_panel(overlays / f"{name}.png", image[:h, :w], masks[i][:h, :w], prediction[:h, :w], names, name)
        _log(metrics, staging, run, root)
    return metrics


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
