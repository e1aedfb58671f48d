"""One training process's model, optimiser, schedule and data, and its pass over an epoch.

Every epoch's randomness is seeded from (seed, epoch) alone (the crops and their
augmentation from (seed, epoch, item)), so a resumed epoch replays exactly. A
cross-validation fold (`segflow.training.folds.Fold`) brings its own images and seed.
"""

from __future__ import annotations

import math
import random
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from segflow.config import Params
from segflow.prepared import entries, read_plan
from segflow.training.dataset import CropDataset, build_augmentation, class_pixel_counts
from segflow.training.distributed import ONE_PROCESS, World, all_sum, check_batch, sync_buffers
from segflow.training.folds import Fold
from segflow.training.losses import build_loss, class_weights
from segflow.training.model import model_from_params

__all__ = ["select_device", "autocast_dtype", "warmup_decay", "build_scheduler", "Trainer"]


def select_device(choice: str, world: World = ONE_PROCESS) -> torch.device:
    """CUDA (this process's GPU) when asked for or when `auto` finds one; CPU otherwise."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def autocast_dtype(amp: bool, device: torch.device) -> torch.dtype | None:
    """The mixed-precision type of `train.amp` on `device`: float16 on CUDA, None on the CPU
    (bfloat16 autocast was slower than float32 with channels_last on an AVX512-BF16 CPU:
    docs/benchmarks.md)."""
    return torch.float16 if amp and device.type == "cuda" else None


def warmup_decay(step: int, total: int, warmup: int, kind: str) -> float:
    """The learning-rate factor (of the peak) at optimizer `step` of `total`: a linear rise
    over the first `warmup` steps, then cosine (to 0) or poly ((1 - t)^0.9, nnU-Net's) decay."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if kind == "poly":
        return (1.0 - progress) ** 0.9
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, kind: str, lr: float, total: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """`train.scheduler` over the whole run of `total` optimizer steps (stepped once per step;
    its state is in the resume file, so a resumed run continues mid-schedule)."""
    if kind == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=total)
    if kind in ("cosine", "poly"):
        warmup = round(warmup_fraction * total)
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, partial(warmup_decay, total=total, warmup=warmup, kind=kind)
        )
    return None


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """One training run: model, optimiser, schedule and the loop over epochs.

    `fold`: train on its images with its seed, validate on its val images (`val_entries`);
    None: the preprocess split's train and val, and params.seed.
    """

    def __init__(self, params: Params, preprocess_dir: Path, world: World, fold: Fold | None = None) -> None:
        self.params, self.world, self.fold = params, world, fold
        self.seed = params.seed if fold is None else fold.seed
        self.device = select_device(params.train.device, world)
        names, ignore = params.classes.names, params.classes.ignore_index
        self.plan = read_plan(preprocess_dir)
        crop = self.plan.crop
        train_items = None if fold is None else fold.train
        self.val_entries = entries(preprocess_dir, "val") if fold is None else list(fold.val)
        counts = class_pixel_counts(preprocess_dir, "train", len(names), train_items)
        # Crops centred on a class are drawn with weight inverse to its pixel share.
        rarity = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
        self.augment = build_augmentation(params.augment, crop, ignore, self.seed)
        self.train_set = CropDataset(
            preprocess_dir,
            "train",
            crop,
            params.train.steps_per_epoch * params.train.batch_size,
            ignore,
            self.seed,
            transform=self.augment,
            class_crops=params.train.class_crops,
            class_weights=rarity,
            items=train_items,
        )
        # The same sampler on one process or many: (seed, epoch) orders the crops, and
        # process r takes every world.size-th of them, so the global batches are the same:
        # steps_per_epoch of them (the batch divides among the processes, check_batch).
        self.sampler = DistributedSampler(self.train_set, world.size, world.rank, shuffle=True, seed=self.seed)
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=check_batch(params.train.batch_size, world),
            num_workers=params.train.num_workers,
            sampler=self.sampler,
        )

        _seed(self.seed)  # initial weights
        self.model = model_from_params(params).to(self.device)
        if params.train.channels_last:  # before DDP, whose gradient buckets follow the layout
            self.model.to(memory_format=torch.channels_last)
        # DDP averages the gradients of the processes; BatchNorm buffers follow rank 0.
        self.net = DistributedDataParallel(self.model) if world.distributed else self.model
        self.class_weights = class_weights(counts, params.train.class_weights)
        self.loss_fn = build_loss(params.train.loss, ignore, self.class_weights).to(self.device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=params.train.lr, weight_decay=params.train.weight_decay
        )
        self.scheduler = build_scheduler(
            self.optimizer,
            params.train.scheduler,
            params.train.lr,
            params.train.epochs * len(self.train_loader),
            params.train.warmup_fraction,
        )
        self.amp_dtype = autocast_dtype(params.train.amp, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def describe(self) -> str:
        """What is trained on what, for the log."""
        fold, train = self.fold, self.params.train
        weights = None if self.class_weights is None else [round(w, 2) for w in self.class_weights]
        return (
            ("" if fold is None or fold.count == 1 else f"fold {fold.number} of {fold.count} ")
            + f"on {self.world.size} x {self.device} ({torch.get_num_threads()} threads each): "
            f"{train.steps_per_epoch} steps of {train.batch_size} crops of {list(self.plan.crop)} per epoch, "
            f"drawn from {len(self.train_set.entries)} images, {len(self.val_entries)} val images, "
            f"class weights {weights}"
        )

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
        """`train.steps_per_epoch` optimizer steps; returns (mean loss, crops per second)."""
        # Seeding from (seed, epoch) alone makes a resumed epoch replay exactly.
        # Modulo numpy's seed range: a fold's derived seed is large (the same for the rest).
        epoch_seed = (self.seed * 100_003 + epoch) % 2**32
        _seed(epoch_seed)
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        self.model.train()
        total, count, start = 0.0, 0, time.perf_counter()
        epochs = self.params.train.epochs
        where = "" if self.fold is None or self.fold.count == 1 else f"fold {self.fold.number}/{self.fold.count} "
        bar = tqdm(
            self.train_loader,
            desc=f"{where}epoch {epoch}/{epochs}",
            unit="batch",
            leave=False,
            disable=not self.world.main,
        )
        for images, masks in bar:
            images, masks = images.to(self.device, non_blocking=True), masks.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            if self.params.train.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                logits = self.net(images)
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
        sync_buffers(self.model, self.world)
        total, count = (float(v) for v in all_sum([total, count], self.world, self.device))
        return total / max(count, 1), count / (time.perf_counter() - start)
