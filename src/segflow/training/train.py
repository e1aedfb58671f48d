"""The train stage: fit the U-Net, track it in MLflow, register a `candidate` version.

The kept checkpoint is the epoch with the best validation mIoU. The MLflow run records
the params, per-epoch metrics, the code and data versions, and the registered model.

Resume: after every epoch the whole training state (weights, optimiser, schedule, best
model, history, MLflow run id) is written to a resume file outside the stage's outputs
(DVC deletes outputs before it reruns a stage). Every epoch's randomness (batch order,
augmentation) is seeded from (seed, epoch) alone, so a run resumed after epoch k ends
exactly as a run that was never interrupted, and it continues the same MLflow run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path

import mlflow
import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from segflow.config import Params
from segflow.inference.network import load_checkpoint, save_checkpoint
from segflow.outputs import atomic_dir, file_sha256
from segflow.prepared import PLAN, SPLIT_INDEX, entries, read_plan
from segflow.registry import tracking
from segflow.registry.register import register_model
from segflow.training.dataset import CropDataset, build_augmentation, class_pixel_counts
from segflow.training.losses import build_loss, class_weights
from segflow.training.model import checkpoint_fields, model_from_params
from segflow.training.validate import validate

__all__ = ["HISTORY_FIELDS", "select_device", "train"]

log = logging.getLogger(__name__)

#: Columns of the per-epoch history (a DVC plot).
HISTORY_FIELDS = ("epoch", "train_loss", "val_loss", "val_miou", "val_mdice", "lr", "images_per_s", "seconds")


def select_device(choice: str) -> torch.device:
    """CUDA when asked for or when `auto` finds one; CPU otherwise."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Trainer:
    """One training run: model, optimiser, schedule and the loop over epochs."""

    def __init__(self, params: Params, preprocess_dir: Path) -> None:
        self.params = params
        self.device = select_device(params.train.device)
        names, ignore = params.classes.names, params.classes.ignore_index
        self.plan = read_plan(preprocess_dir)
        crop = tuple(self.plan["crop"])
        counts = class_pixel_counts(preprocess_dir, "train", len(names))
        # Crops centred on a class are drawn with weight inverse to its pixel share.
        rarity = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
        self.augment = build_augmentation(params.augment, crop, ignore, params.seed)
        self.train_set = CropDataset(
            preprocess_dir,
            "train",
            crop,
            self.plan["crops_per_image"],
            ignore,
            params.seed,
            transform=self.augment,
            class_crops=params.train.class_crops,
            class_weights=rarity,
        )
        self.generator = torch.Generator()
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=params.train.batch_size,
            num_workers=params.train.num_workers,
            shuffle=True,
            generator=self.generator,
        )

        _seed(params.seed)  # initial weights
        self.model = model_from_params(params).to(self.device)
        self.class_weights = class_weights(counts, params.train.class_weights)
        self.loss_fn = build_loss(params.train.loss, ignore, self.class_weights).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=params.train.lr, weight_decay=params.train.weight_decay
        )
        steps = params.train.epochs * max(len(self.train_loader), 1)
        if params.train.scheduler == "onecycle":
            self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, params.train.lr, total_steps=steps)
        elif params.train.scheduler == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, steps)
        else:
            self.scheduler = None
        self.amp = params.train.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)

    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler else None,
            "scaler": self.scaler.state_dict(),
        }

    def load_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])

    def train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training split; returns (mean loss, images per second)."""
        # Seeding from (seed, epoch) alone makes a resumed epoch replay exactly.
        epoch_seed = self.params.seed * 100_003 + epoch
        _seed(epoch_seed)
        self.generator.manual_seed(epoch_seed)
        self.augment.set_random_seed(epoch_seed)
        self.train_set.set_epoch(epoch)
        self.model.train()
        total, count, start = 0.0, 0, time.perf_counter()
        epochs = self.params.train.epochs
        bar = tqdm(self.train_loader, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False)
        for images, masks in bar:
            images, masks = images.to(self.device, non_blocking=True), masks.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                logits = self.model(images)
            loss = self.loss_fn(logits.float(), masks)
            self.scaler.scale(loss).backward()
            if self.params.train.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.params.train.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler:
                self.scheduler.step()
            total += loss.item() * len(images)
            count += len(images)
            rate = count / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{total / count:.3f}", img_s=f"{rate:.1f}")
        return total / max(count, 1), count / (time.perf_counter() - start)


def _flat_params(params: Params) -> dict[str, object]:
    flat: dict[str, object] = {}
    for section, values in params.model_dump(mode="json").items():
        if isinstance(values, dict):
            flat.update({f"{section}.{key}": value for key, value in values.items()})
        else:
            flat[section] = values
    return flat


def _resume_key(params: Params, split_hash: str) -> str:
    """What a resume file must match: every param that shapes training, and the data."""
    relevant = params.model_dump(mode="json", include={"seed", "classes", "preprocess", "model", "augment", "train"})
    relevant["train"].pop("resume")
    blob = json.dumps({"params": relevant, "split": split_hash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _save_resume(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(payload, partial)
    os.replace(partial, path)  # never leaves a half-written resume file


def _load_resume(path: Path, key: str, enabled: bool) -> dict | None:
    if not enabled or not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("key") != key:
        log.info("ignoring %s: it belongs to other params or data", path)
        return None
    return payload


def train(
    params: Params,
    preprocess_dir: Path,
    out_dir: Path,
    root: Path,
    resume_file: Path,
    report_dir: Path | None = None,
) -> dict:
    """Train, log and register; writes ``model.pt``, ``history.csv`` and ``run.json``.

    `report_dir` (the rasterize stage's dataset report) is logged with the run.
    """
    torch.use_deterministic_algorithms(True, warn_only=True)
    trainer = _Trainer(params, preprocess_dir)
    # The split and the plan name every stored file; their content follows from them and
    # the fetched data (DVC's hashes), so hashing the two small files identifies the data.
    split_hash = file_sha256(preprocess_dir / SPLIT_INDEX, preprocess_dir / PLAN)
    key = _resume_key(params, split_hash)
    resumed = _load_resume(resume_file, key, params.train.resume)
    names, ignore = params.classes.names, params.classes.ignore_index
    state = {"epoch": 0, "best_miou": -1.0, "best_epoch": 0, "best_model": None, "history": [], "bad_epochs": 0}
    if resumed:
        trainer.load_state(resumed["trainer"])
        state = resumed["progress"]
        log.info("resuming after epoch %d of run %s", state["epoch"], resumed["run_id"])

    tracking.configure(root)
    experiment = tracking.experiment_id(params.mlflow.experiment, root)
    tags = {**tracking.code_version(root), "data_md5": tracking.data_version(root), "split_sha256": split_hash}
    run_args = {"run_id": resumed["run_id"]} if resumed else {"experiment_id": experiment}
    log.info(
        "training on %s (%d threads): %d crops of %s per epoch from %d images, %d val images, class weights %s",
        trainer.device,
        torch.get_num_threads(),
        len(trainer.train_set),
        trainer.plan["crop"],
        len(trainer.train_set.entries),
        len(entries(preprocess_dir, "val")),
        None if trainer.class_weights is None else [round(w, 2) for w in trainer.class_weights],
    )
    with atomic_dir(out_dir) as staging, mlflow.start_run(**run_args) as run:
        if not resumed:
            mlflow.log_params(_flat_params(params))
            mlflow.set_tags(tags)
            if report_dir is not None and report_dir.is_dir():
                mlflow.log_artifacts(str(report_dir), artifact_path="dataset")
            for name in ("duplicates.json", PLAN):
                if (preprocess_dir / name).is_file():
                    mlflow.log_artifact(str(preprocess_dir / name), artifact_path="dataset")
            plan = trainer.plan
            mlflow.log_params(
                {
                    "plan.long_side": plan["long_side"],
                    "plan.crop": plan["crop"],
                    "plan.tile": plan["tile"],
                    "plan.crops_per_image": plan["crops_per_image"],
                }
            )
        for epoch in range(state["epoch"] + 1, params.train.epochs + 1):
            start = time.perf_counter()
            train_loss, rate = trainer.train_epoch(epoch)
            val_loss, meter = validate(
                trainer.model, preprocess_dir, tuple(trainer.plan["tile"]), trainer.loss_fn, len(names), ignore
            )
            scores = meter.compute()
            row = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_miou": scores["miou"],
                "val_mdice": scores["mdice"],
                "lr": trainer.optimizer.param_groups[0]["lr"],
                "images_per_s": rate,
                "seconds": time.perf_counter() - start,
            }
            state["history"].append(row)
            mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            improved = scores["miou"] > state["best_miou"]
            if improved:
                state.update(
                    best_miou=scores["miou"],
                    best_epoch=epoch,
                    bad_epochs=0,
                    best_model={k: v.detach().cpu().clone() for k, v in trainer.model.state_dict().items()},
                )
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch
            _save_resume(
                resume_file, {"key": key, "run_id": run.info.run_id, "trainer": trainer.state(), "progress": state}
            )
            log.info(
                "epoch %d/%d  loss %.4f  val loss %.4f  mIoU %.4f  Dice %.4f  %.1f img/s  %.1fs%s",
                epoch,
                params.train.epochs,
                train_loss,
                val_loss,
                scores["miou"],
                scores["mdice"],
                rate,
                row["seconds"],
                "  best" if improved else "",
            )
            patience = params.train.early_stopping_patience
            if patience and state["bad_epochs"] >= patience:
                log.info("early stop: no better val mIoU for %d epochs", patience)
                break
        trainer.model.load_state_dict(state["best_model"])
        save_checkpoint(
            trainer.model.cpu(),
            staging / "model.pt",
            **checkpoint_fields(params, trainer.plan),
            epoch=state["best_epoch"],
            val_miou=state["best_miou"],
        )
        with (staging / "history.csv").open("w", newline="") as stream:
            writer = csv.DictWriter(stream, fieldnames=HISTORY_FIELDS)
            writer.writeheader()
            writer.writerows(state["history"])
        mlflow.log_artifact(str(staging / "history.csv"))
        best, meta = load_checkpoint(staging / "model.pt")
        mlflow.log_metrics({"best_val_miou": state["best_miou"], "best_epoch": meta["epoch"]})
        version = register_model(best, params, tags, meta, record_dir=out_dir.parent / "promotions")
        summary = {
            "run_id": run.info.run_id,
            "experiment_id": run.info.experiment_id,
            "model_name": params.mlflow.model_name,
            "model_version": version,
            "best_epoch": meta["epoch"],
            "best_val_miou": state["best_miou"],
            "epochs_run": state["epoch"],
        }
        (staging / "run.json").write_text(json.dumps(summary, indent=1))
    resume_file.unlink(missing_ok=True)
    return summary
