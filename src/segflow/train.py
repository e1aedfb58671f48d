"""The train stage: fit the U-Net, track it in MLflow, register a `candidate` version.

The checkpoint kept is the epoch with the best validation mIoU. The MLflow run records
the params, per-epoch metrics, the code and data versions, and the model (with its
signature and an input example) as a new version of the registered model.
"""
from __future__ import annotations

import csv
import json
import logging
import random
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from segflow import tracking
from segflow.config import Params
from segflow.dataset import SegmentationDataset, build_augmentation, load_split
from segflow.losses import build_loss
from segflow.metrics import SegmentationMeter
from segflow.model import SegmentationNet, load_checkpoint, model_from_params, save_checkpoint
from segflow.outputs import atomic_dir, file_sha256
from segflow.registry import register_model

__all__ = ["select_device", "seed_everything", "evaluate_loader", "train"]

log = logging.getLogger(__name__)

#: Columns of the per-epoch history (a DVC plot).
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_miou", "val_mdice", "seconds")


def select_device(choice: str) -> torch.device:
    """CUDA when asked for or when `auto` finds one; CPU otherwise."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a generator for the batch order."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@torch.no_grad()
def evaluate_loader(
    model: SegmentationNet, loader: DataLoader, loss_fn: torch.nn.Module,
    num_classes: int, ignore_index: int, device: torch.device,
) -> tuple[float, SegmentationMeter]:
    """Mean loss and the accumulated metrics of `model` over `loader`."""
    model.eval()
    meter = SegmentationMeter(num_classes, ignore_index)
    total, count = 0.0, 0
    for images, masks in loader:
        images, masks = images.to(device), masks.to(device)
        logits = model(images)
        total += float(loss_fn(logits, masks)) * len(images)
        count += len(images)
        meter.update(logits.argmax(1), masks)
    return total / max(count, 1), meter


def _train_epoch(model, loader, loss_fn, optimizer, device, epoch: int, epochs: int) -> float:
    model.train()
    total, count, start = 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
    for images, masks in bar:
        images, masks = images.to(device), masks.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), masks)
        loss.backward()
        optimizer.step()
        total += loss.item() * len(images)
        count += len(images)
        bar.set_postfix(loss=f"{total / count:.3f}", img_s=f"{count / (time.perf_counter() - start):.1f}")
    return total / max(count, 1)


def _flat_params(params: Params) -> dict[str, object]:
    flat: dict[str, object] = {}
    for section, values in params.model_dump(mode="json").items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return flat


def train(params: Params, preprocess_dir: Path, out_dir: Path, root: Path) -> dict:
    """Train, log and register; writes ``model.pt``, ``history.csv`` and ``run.json``."""
    generator = seed_everything(params.seed)
    device = select_device(params.train.device)
    names, ignore = params.classes.names, params.classes.ignore_index
    size = params.preprocess.image_size
    train_set = SegmentationDataset(
        *load_split(preprocess_dir, "train"),
        transform=build_augmentation(params.augment, size, ignore, params.seed),
    )
    val_set = SegmentationDataset(*load_split(preprocess_dir, "val"))
    loader_args = {"batch_size": params.train.batch_size, "num_workers": params.train.num_workers}
    train_loader = DataLoader(train_set, shuffle=True, generator=generator, **loader_args)
    val_loader = DataLoader(val_set, **loader_args)

    model = model_from_params(params).to(device)
    loss_fn = build_loss(params.train.loss, ignore)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.train.lr)

    tracking.configure(root)
    experiment = tracking.experiment_id(params.mlflow.experiment, root)
    split_hash = file_sha256(*sorted(preprocess_dir.glob("*.npy")))
    tags = {**tracking.code_version(root), "data_md5": tracking.data_version(root), "split_sha256": split_hash}
    with atomic_dir(out_dir) as staging, mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_params(_flat_params(params))
        mlflow.set_tags(tags)
        best_miou, history = -1.0, []
        log.info("training on %s: %d train / %d val images", device, len(train_set), len(val_set))
        for epoch in range(1, params.train.epochs + 1):
            start = time.perf_counter()
            train_loss = _train_epoch(model, train_loader, loss_fn, optimizer, device, epoch, params.train.epochs)
            val_loss, meter = evaluate_loader(model, val_loader, loss_fn, len(names), ignore, device)
            scores = meter.compute()
            row = {
                "epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                "val_miou": scores["miou"], "val_mdice": scores["mdice"],
                "seconds": time.perf_counter() - start,
            }
            history.append(row)
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            improved = scores["miou"] > best_miou
            if improved:
                best_miou = scores["miou"]
                save_checkpoint(model, params, staging / "model.pt", epoch=epoch, val_miou=best_miou)
            log.info(
                "epoch %d/%d  train loss %.4f  val loss %.4f  val mIoU %.4f  Dice %.4f  %.1fs%s",
                epoch, params.train.epochs, train_loss, val_loss, scores["miou"], scores["mdice"],
                row["seconds"], "  (best)" if improved else "",
            )
        with (staging / "history.csv").open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(history)
        mlflow.log_artifact(str(staging / "history.csv"))
        best, meta = load_checkpoint(staging / "model.pt")
        mlflow.log_metrics({"best_val_miou": best_miou, "best_epoch": meta["epoch"]})
        version = register_model(best, params, tags)
        summary = {
            "run_id": run.info.run_id,
            "experiment_id": experiment,
            "model_name": params.mlflow.model_name,
            "model_version": version,
            "best_epoch": meta["epoch"],
            "best_val_miou": best_miou,
        }
        (staging / "run.json").write_text(json.dumps(summary, indent=1))
    return summary
