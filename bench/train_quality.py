"""Benchmark: test mIoU / Dice and wall time of training variants, side by side.

Every variant trains on the same data with the same seed and epochs, then is scored on
the test split. Runs are tracked in a throwaway MLflow store, so the project's store is
untouched.

    python bench/train_quality.py --variants losses                    # CE, Dice, CE+Dice, MSE
    python bench/train_quality.py --variants losses --dataset photos   # the same on real photos
    python bench/train_quality.py --variants defaults                  # first pipeline vs defaults
    python bench/train_quality.py --variants graph --seeds 0,1,2       # plain vs GloRe, 3 seeds

--dataset sample (default) uses artifacts/preprocess from `dvc repro`; --dataset photos
the 7 real photos of ../shared/datasets in 5 folds (bench/photos.py), test scores pooled.
Test scores are at each test image's original resolution. Every variant trains on the same
preprocessed data, so on the same planned working resolution and crops: "first pipeline"
changes the model and training params of issue 2, not its 128 px letterbox.

--seeds trains every variant once per seed (params.yaml's ``seed``: initial weights,
augmentation, batch order; the split is the preprocessed one) and adds a table of the mean
± the standard deviation over seeds: test mIoU, the weakest class's IoU, weights, training
time and PyTorch CPU prediction time per test image (tiling included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
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
    # Issue 16: a GloRe unit on the deepest encoder feature, the rest of params.yaml unchanged.
    "graph": {
        "plain": {"model": {"graph": "none", "graph_decoder": False}},
        "glore": {"model": {"graph": "glore", "graph_decoder": False}},
    },
    "graph-decoder": {
        "plain": {"model": {"graph": "none", "graph_decoder": False}},
        "glore": {"model": {"graph": "glore", "graph_decoder": False}},
        "glore + decoder stages": {"model": {"graph": "glore", "graph_decoder": True}},
    },
}


def seeded(variants: dict[str, dict], seeds: list[int]) -> dict[str, dict]:
    """Each variant once per seed, named "<variant> (seed <s>)"."""
    return {
        f"{name} (seed {seed})": overrides | {"seed": seed} for name, overrides in variants.items() for seed in seeds
    }


def spread(values: list[float], digits: int) -> str:
    """Mean ± standard deviation, as text (± 0 for a single value)."""
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {deviation:.{digits}f}"


def summary(rows: list[dict], variants: dict[str, dict], seeds: list[int]) -> list[dict]:
    """Per variant: its rows over `seeds` (named by `seeded`) reduced to mean ± deviation."""
    out = []
    for name in variants:
        runs = [r for r in rows if r["variant"] in {f"{name} (seed {s})" for s in seeds}]
        out.append(
            {
                "variant": name,
                "seeds": seeds,
                "test_miou": [r["test_miou"] for r in runs],
                "weakest_iou": [float(np.nanmin(np.array(r["iou"], float))) for r in runs],
                "parameters": runs[0]["parameters"],
                "seconds": [r["seconds"] for r in runs],
                "ms_per_image": [r["ms_per_image"] for r in runs],
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", choices=sorted(VARIANTS), default="losses")
    parser.add_argument("--dataset", choices=["sample", "photos"], default="sample")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("artifacts/preprocess"), help="for --dataset sample")
    parser.add_argument("--epochs", type=int, help="override train.epochs for every variant")
    parser.add_argument(
        "--seeds", type=lambda text: [int(s) for s in text.split(",")], help="e.g. 0,1,2: train each variant per seed"
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    base = yaml.safe_load(args.params.read_text())
    if args.epochs:
        base["train"]["epochs"] = args.epochs
    variants = VARIANTS[args.variants]
    rows = run_variants(base, seeded(variants, args.seeds) if args.seeds else variants, args.dataset, args.data)
    print(
        f"\n{platform.node()} {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, "
        f"{args.dataset}, {rows[0]['folds']} fold(s)"
    )
    print("| variant | loss | epochs run | test mIoU | test Dice | min IoU class | train time (s) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['loss']} | {', '.join(map(str, r['epochs']))} | {r['test_miou']:.3f} "
            f"| {r['test_mdice']:.3f} | {np.nanmin(np.array(r['iou'], float)):.3f} | {r['seconds']:.0f} |"
        )
    result: dict | list = rows
    if args.seeds:
        table = summary(rows, variants, args.seeds)
        print(f"\nmean ± standard deviation over seeds {args.seeds}")
        print("| variant | test mIoU | weakest class IoU | weights | train time (s) | CPU ms per test image |")
        print("|---|---|---|---|---|---|")
        for r in table:
            print(
                f"| {r['variant']} | {spread(r['test_miou'], 3)} | {spread(r['weakest_iou'], 3)} "
                f"| {r['parameters']:,} | {spread(r['seconds'], 0)} | {spread(r['ms_per_image'], 0)} |"
            )
        result = {"runs": rows, "summary": table}
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
