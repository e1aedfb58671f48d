"""Benchmark: test mIoU / Dice and wall time of training variants, side by side.

Every variant trains on the same data with the same seed and epochs, then is scored on
the test split. Runs are tracked in a throwaway MLflow store, so the project's store is
untouched.

    python bench/train_quality.py --variants losses                    # CE, Dice, CE+Dice, MSE
    python bench/train_quality.py --variants losses --dataset photos   # the same on real photos
    python bench/train_quality.py --variants defaults                  # first pipeline vs defaults

--dataset sample (default) uses artifacts/preprocess from `dvc repro`; --dataset photos
the 7 real photos of ../shared/datasets in 5 folds (bench/photos.py), test scores pooled.
Test scores are at each test image's original resolution. Every variant trains on the same
preprocessed data, so on the same planned working resolution and crops: "first pipeline"
changes the model and training params of issue 2, not its 128 px letterbox.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from photos import run_variants  # noqa: E402

#: The params of the first pipeline (issue 2), for "defaults".
FIRST_PIPELINE = {
    "model": {"encoder": "resnet18", "encoder_weights": None},
    "train": {
        "lr": 0.001,
        "weight_decay": 0.0,
        "class_weights": "none",
        "scheduler": "none",
        "grad_clip": 0.0,
        "loss": "ce+dice",
    },
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", choices=sorted(VARIANTS), default="losses")
    parser.add_argument("--dataset", choices=["sample", "photos"], default="sample")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("artifacts/preprocess"), help="for --dataset sample")
    parser.add_argument("--epochs", type=int, help="override train.epochs for every variant")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    base = yaml.safe_load(args.params.read_text())
    if args.epochs:
        base["train"]["epochs"] = args.epochs
    rows = run_variants(base, VARIANTS[args.variants], args.dataset, args.data)
    print(
        f"\n{platform.node()} {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, "
        f"{args.dataset}, {rows[0]['folds']} fold(s)"
    )
    print("| variant | loss | epochs run | test mIoU | test Dice | min IoU class | train time (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['loss']} | {', '.join(map(str, r['epochs']))} | {r['test_miou']:.3f} "
            f"| {r['test_mdice']:.3f} | {min(r['iou']):.3f} | {r['seconds']:.0f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
