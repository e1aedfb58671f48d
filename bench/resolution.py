"""Benchmark: today's fixed 128 px letterbox vs the planned working scale, side by side.

For each dataset, both variants run the whole pipeline (fetch, rasterize, preprocess,
train, evaluate) with the same params, seed and epochs; only ``preprocess.image_size``
differs (128 vs auto). Test scores are at each test image's original resolution, with the
95% bootstrap interval and the number of test images. Runs go to a throwaway MLflow store.

    python bench/resolution.py                       # every dataset below that is present
    python bench/resolution.py --datasets sample balloon --epochs 20 --out results.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from segflow.config import Params
from segflow.data.fetch import fetch
from segflow.data.preprocess import preprocess
from segflow.data.rasterize import rasterize
from segflow.prepared import read_plan
from segflow.training.evaluate import evaluate
from segflow.training.train import train

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"

#: Each dataset's params (merged over params.yaml), as a user would write them.
DATASETS = {
    "sample": {"fetch": {"source": str(REPO / "data")}},
    "balloon": {
        "classes": {"names": ["background", "head"], "palette": []},
        "fetch": {
            "source": str(SHARED / "via-heads-balloon"),
            "annotations": ["*/via_region_data.json"],
            "default_label": "head",
        },
    },
    "cheetah": {
        "classes": {"names": "auto", "palette": []},
        "fetch": {
            "source": str(SHARED / "cvat-segmask-cheetah"),
            "annotations": "labelmap.txt",
            "images": "data/cheetah",
        },
    },
    "seagrass": {
        "classes": {"names": "auto", "palette": []},
        "fetch": {"source": str(SHARED / "cvat-seagrass-polygons"), "annotations": "annotations.xml"},
    },
    "coins": {
        "classes": {"names": "auto", "palette": []},
        "fetch": {
            "source": str(SHARED / "cvat-coins-polygons" / "data"),
            "annotations": "annotations.xml",
            "bad_records": "skip",
        },
    },
}
VARIANTS = {
    "letterbox 128": {"preprocess": {"image_size": 128}},
    "planned": {"preprocess": {"image_size": "auto"}},
    # The plan with the letterbox's compute: 128 px crops, train.steps_per_epoch per epoch as
    # every variant.
    "planned, letterbox budget": {"preprocess": {"image_size": "auto", "max_crop": 128}},
}


def merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


def prepare(raw: dict, folder: Path) -> tuple[Params, float]:
    """fetch, rasterize and preprocess `raw` params into `folder`; the params with the class
    list fetch found, and the preprocess stage's seconds."""
    from segflow.config.auto_classes import with_classes_file
    from segflow.data.fetch import CLASSES_FILE

    params = Params.model_validate(raw)
    fetch(params, folder / "fetch")
    params = with_classes_file(params, folder / "fetch" / CLASSES_FILE)
    rasterize(params, folder / "fetch", folder / "masks")
    start = time.perf_counter()
    preprocess(params, folder / "fetch", folder / "masks", folder / "pre")
    return params, time.perf_counter() - start


def run(raw: dict, folder: Path) -> dict:
    """The pipeline on `raw` params in `folder`; returns the plan, scores and times."""
    params, prep_s = prepare(raw, folder)
    start = time.perf_counter()
    train(params, folder / "pre", folder / "train", folder, folder / "resume.pt")
    train_s = time.perf_counter() - start
    metrics = evaluate(params, folder / "pre", folder / "train", folder / "eval", folder)
    plan = read_plan(folder / "pre")
    return {
        "plan": plan.model_dump(mode="json", include={"long_side", "median_scale", "crop", "tile"}),
        "test": metrics["test"],
        "preprocess_s": prep_s,
        "train_s": train_s,
        "classes": params.classes.names,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    base = yaml.safe_load(args.params.read_text())
    if args.epochs:
        base["train"]["epochs"] = args.epochs
    results = []
    with tempfile.TemporaryDirectory(prefix="segflow-resolution-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/bench.db"
        for dataset in args.datasets:
            source = Path(DATASETS[dataset]["fetch"]["source"])
            if not source.exists():
                print(f"{dataset}: {source} is absent, skipped", flush=True)
                continue
            for variant in args.variants:
                overrides = VARIANTS[variant]
                folder = Path(tmp) / dataset / variant.replace(" ", "-").replace(",", "")
                raw = merge(merge(base, DATASETS[dataset]), overrides)
                raw["mlflow"] = {"experiment": f"{dataset}-{variant}", "model_name": f"{dataset}-{variant}"}
                row = {"dataset": dataset, "variant": variant, **run(raw, folder)}
                results.append(row)
                test = row["test"]
                print(
                    f"{dataset} / {variant}: mIoU {test['miou']} {test['miou_ci95']} on {test['images']} "
                    f"test images, train {row['train_s']:.0f} s, plan {row['plan']}",
                    flush=True,
                )
    print(
        f"\n{platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}, "
        f"{base['train']['epochs']} epochs, seed {base['seed']}; test mIoU at original resolution"
    )
    print(
        "| dataset | variant | long side (median scale) / crop / tile | test images | test mIoU [95% CI] "
        "| weakest class IoU "
        "| train (s) | train ratio |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in results:
        test, plan = row["test"], row["plan"]
        first = next(r for r in results if r["dataset"] == row["dataset"])
        weakest = min((v, k) for k, v in test["iou"].items() if v is not None)
        low, high = test["miou_ci95"] or [None, None]
        print(
            f"| {row['dataset']} | {row['variant']} | {plan['long_side']} ({plan['median_scale']}) "
            f"/ {plan['crop'][0]} / "
            f"{'x'.join(map(str, plan['tile']))} | {test['images']} | {test['miou']:.3f} [{low:.3f}, {high:.3f}] "
            f"| {weakest[1]} {weakest[0]:.3f} | {row['train_s']:.0f} | {row['train_s'] / first['train_s']:.2f} |"
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    sys.exit(main())
