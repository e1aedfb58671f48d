"""Benchmark: what segflow's input pipeline costs a training epoch.

Side by side in one run, same model, batch size and optimiser:
  loader  - a full training epoch through segflow's DataLoader, built as the train stage
            builds it: `CropDataset` random crops (the plan's crop size, steps_per_epoch
            batches, class-aware crops per train.class_crops) of the memory-mapped images
            at the working resolution, albumentations augmentation from params.yaml;
  memory  - the same number of optimiser steps on batches already in memory as tensors.
The loader's cost is 1 - memory_time / loader_time. Epochs alternate to share noise.
The in-memory batches are one loader epoch's crops, kept; the loader reads, crops and
augments every item again each epoch, which is the cost measured.

    python bench/loader_throughput.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from segflow.config import load_params
from segflow.prepared import read_plan
from segflow.training.dataset import CropDataset, build_augmentation, class_pixel_counts
from segflow.training.folds import step_count
from segflow.training.losses import build_loss
from segflow.training.model import model_from_params


def step(model, optimizer, loss_fn, images, masks) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss_fn(model(images), masks).backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("artifacts/preprocess"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = load_params(args.params)
    plan, ignore = read_plan(args.data), params.classes.ignore_index
    crop = plan.crop
    # As segflow.training.train: crops centred on a class drawn with weight inverse to its pixel share.
    counts = class_pixel_counts(args.data, "train", len(params.classes.names))
    rarity = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    dataset = CropDataset(
        args.data,
        "train",
        crop,
        step_count(args.data, params.train.steps_per_epoch, params.train.folds, ignore) * params.train.batch_size,
        ignore,
        params.seed,
        transform=build_augmentation(params.augment, crop, ignore, params.seed),
        class_crops=params.train.class_crops,
        class_weights=rarity,
    )
    loader = DataLoader(dataset, batch_size=params.train.batch_size, shuffle=True, num_workers=params.train.num_workers)
    model = model_from_params(params).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=params.train.lr)
    loss_fn = build_loss(params.train.loss, ignore)
    in_memory = [(images.clone(), masks.clone()) for images, masks in loader]
    step(model, optimizer, loss_fn, *in_memory[0])  # warm-up
    times: dict[str, list[float]] = {"loader": [], "memory": []}
    for _ in range(args.repeats):
        start = time.perf_counter()
        for images, masks in loader:
            step(model, optimizer, loss_fn, images, masks)
        times["loader"].append(time.perf_counter() - start)
        start = time.perf_counter()
        for images, masks in in_memory:
            step(model, optimizer, loss_fn, images, masks)
        times["memory"].append(time.perf_counter() - start)
    n = len(dataset)
    loader_s, memory_s = statistics.median(times["loader"]), statistics.median(times["memory"])
    print(
        f"{os.cpu_count()} cores, {torch.get_num_threads()} threads, {n} crops of {crop[0]}x{crop[1]} px "
        f"(drawn from {len(dataset.entries)} images, working long side {plan.long_side} px), "
        f"batch {params.train.batch_size}, workers {params.train.num_workers}, {args.repeats} epochs each"
    )
    print("| pipeline | median epoch (s) | crops/s |")
    print("|---|---|---|")
    print(f"| segflow loader + augmentation | {loader_s:.2f} | {n / loader_s:.1f} |")
    print(f"| tensors already in memory | {memory_s:.2f} | {n / memory_s:.1f} |")
    print(f"loader cost: {100 * (1 - memory_s / loader_s):.1f}% of the epoch")


if __name__ == "__main__":
    main()
