"""Benchmark: test mIoU / Dice and wall time of training variants, side by side.

Every variant trains on the same preprocessed split (default: artifacts/preprocess from
`dvc repro`) with the same seed, then is scored on the test split. Runs are tracked in
a throwaway MLflow store, so the project's store is untouched.

    python bench/train_quality.py --variants losses      # CE, Dice, CE+Dice, MSE
    python bench/train_quality.py --variants defaults    # first pipeline vs current defaults
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from segflow.config import Params
from segflow.dataset import load_split
from segflow.evaluate import predict
from segflow.losses import build_loss
from segflow.metrics import SegmentationMeter
from segflow.model import load_checkpoint
from segflow.train import train

#: The params of the first pipeline (issue 2), for "defaults".
FIRST_PIPELINE = {
    "train": {"epochs": 20, "lr": 0.001, "weight_decay": 0.0, "class_weights": "none",
              "scheduler": "none", "grad_clip": 0.0, "loss": "ce+dice"},
}
VARIANTS = {
    "losses": {
        "ce": {"train": {"loss": "ce"}},
        "dice": {"train": {"loss": "dice"}},
        "ce+dice": {"train": {"loss": "ce+dice"}},
        "mse (one-hot)": {"train": {"loss": "mse"}},
    },
    "defaults": {
        "first pipeline (issue 2)": FIRST_PIPELINE,
        "current defaults": {},
    },
}


def merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def score(params: Params, preprocess: Path, model_path: Path) -> dict:
    model, _ = load_checkpoint(model_path)
    images, masks = load_split(preprocess, "test")
    loss_fn = build_loss(params.train.loss, params.classes.ignore_index)
    predictions, _ = predict(model, images, masks, loss_fn, 8, torch.device("cpu"))
    meter = SegmentationMeter(len(params.classes.names), params.classes.ignore_index)
    meter.update(torch.from_numpy(predictions), torch.from_numpy(np.asarray(masks)))
    return meter.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", choices=sorted(VARIANTS), default="losses")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("artifacts/preprocess"))
    parser.add_argument("--epochs", type=int, help="override train.epochs for every variant")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    base = yaml.safe_load(args.params.read_text())
    if args.epochs:
        base["train"]["epochs"] = args.epochs
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/bench.db"
        for name, overrides in VARIANTS[args.variants].items():
            params = Params.model_validate(merge(base, overrides))
            start = time.perf_counter()
            summary = train(params, args.data, Path(tmp) / name, Path(tmp), Path(tmp) / "resume.pt")
            seconds = time.perf_counter() - start
            scores = score(params, args.data, Path(tmp) / name / "model.pt")
            rows.append({"variant": name, "loss": params.train.loss, "epochs": summary["epochs_run"],
                         "test_miou": scores["miou"], "test_mdice": scores["mdice"],
                         "iou": scores["iou"], "seconds": seconds})
            print(f"{name}: mIoU {scores['miou']:.4f} Dice {scores['mdice']:.4f} in {seconds:.0f}s", flush=True)
    print(f"\n{platform.node()} {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print("| variant | loss | epochs | test mIoU | test Dice | min IoU class | train time (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['loss']} | {r['epochs']} | {r['test_miou']:.3f} | {r['test_mdice']:.3f} "
              f"| {min(r['iou']):.3f} | {r['seconds']:.0f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
