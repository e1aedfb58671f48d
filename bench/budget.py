"""Benchmark: the step budget and honest splits (issue 21) against the epoch they replaced.

For each dataset two variants run the whole pipeline (fetch, rasterize, preprocess, train,
evaluate) with the same params and seed:

- "before": an epoch is one crop per training photo (``train.steps_per_epoch`` set to
  ceil(train photos / batch), what the old epoch cost), near duplicates only reported,
  no validation top-up: the defaults this issue replaced.
- "now": params.yaml's defaults (16 steps of 8 crops per epoch whatever the dataset size,
  near duplicates grouped, a val split of at least max(3, 10%), 5-fold cross-validation
  below 50 train + val photos; 3 folds before the "folds5" runs made it 5; and since the
  "long" runs, one model of 64 steps per epoch below 50 photos of 5 classes or more).
- "one" (only with ``--variants``): "now" with one model of 16 steps per epoch
  (``train.folds: 1``, ``train.steps_per_epoch: 16``), the default before ``auto``. The
  levers below ("long" ... "strong") were measured against it and keep one model; "before"
  has none.
- "long" (only with ``--variants``): "one" with 4x the steps per epoch (64), what auto now
  gives a small set of many classes (the lever the README offered before).
- "crops", "ce" (only with ``--variants``): "now" with twice the share of crops centred on a
  rare-class pixel (``train.class_crops`` 0.6), or the cross-entropy loss alone (no Dice).
- "folds" (only with ``--variants``): 3-fold cross-validation of the non-test photos
  (``train.folds: 3``, auto's number until "folds5" made it 5), the ensemble of the 3 nets.
- "foldslong" (only with ``--variants``): "folds" with 4x the steps per epoch (64), both levers
  for small sets at once (12x the default training time).
- "folds5" (only with ``--variants``): 5-fold cross-validation (nnU-Net's default; auto's
  number since these runs), the ensemble of 5 nets (5/3 of the training time of "folds").
- "drawn" (only with ``--variants``): "now" with the split as the seeded draw falls
  (``preprocess.cover_classes: false``), before drawn test and val splits were made to show
  every class two training photos show.
- "onepx20" (only with ``--variants``): "one" with the plan's smallest objects kept 20 px
  across (``preprocess.min_object_px``; 12 before): a larger working scale and crop where
  small objects limit them (coins: long side 323 -> 538 px, crop 192-256 for 128-160).
- "onenoflip" (only with ``--variants``): "one" without horizontal flips (``augment.hflip:
  0``; 0.5 before): a mirrored 2 or 5 is no digit, and the coins' weakest classes are the
  digit 2 and its coin.
- "light", "strong" (only with ``--variants``): "now" with weaker or stronger augmentation
  (``augment``: affine and colour jitter half or 1.6x as often, larger shifts, scales and
  rotations in "strong").

Test scores are at each test image's original resolution with the 95% bootstrap interval.
Runs go to a throwaway MLflow store.

    python bench/budget.py                                   # every dataset that is present
    python bench/budget.py --datasets balloon coins --seeds 0 1 2 --out budget.json
    python bench/budget.py --datasets coins seagrass --seeds 0 1 2 --variants now long
    python bench/budget.py --datasets coins seagrass --seeds 0 1 2 --variants now crops ce
    python bench/budget.py --datasets seagrass --seeds 0 1 2 --variants now folds5
    python bench/budget.py --datasets coins --seeds 0 1 2 --variants drawn now
    python bench/budget.py --datasets coins --seeds 0 1 2 --variants one onepx20
    python bench/budget.py --datasets coins --seeds 0 1 2 --variants one onenoflip
    python bench/budget.py --plan --variants now             # what auto gives each set, no training
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from resolution import DATASETS, REPO, merge, prepare  # noqa: E402

from segflow.config import Params  # noqa: E402
from segflow.prepared import entries, read_plan  # noqa: E402
from segflow.training.evaluate import evaluate  # noqa: E402
from segflow.training.folds import fold_count, mask_classes, step_count  # noqa: E402
from segflow.training.train import train  # noqa: E402

#: One model, as params.yaml trained before `train.folds: auto` (its folds below 50 train +
#: val photos): the levers below were measured against it, and "before" had no folds.
ONE = {"train": {"folds": 1, "steps_per_epoch": 16}}
BEFORE = merge({"preprocess": {"near_duplicates": "report", "min_val_images": 0}}, ONE)
#: Each variant's changes to params.yaml ("before" also sets the old epoch's steps, in `run`).
VARIANTS = {
    "before": BEFORE,
    "now": {},
    "one": ONE,
    "long": merge({"train": {"steps_per_epoch": 64}}, ONE),
    "crops": merge({"train": {"class_crops": 0.6}}, ONE),
    "ce": merge({"train": {"loss": "ce"}}, ONE),
    "folds": {"train": {"folds": 3}},
    "foldslong": {"train": {"folds": 3, "steps_per_epoch": 64}},
    "folds5": {"train": {"folds": 5}},
    "drawn": {"preprocess": {"cover_classes": False}},
    "onepx20": merge({"preprocess": {"min_object_px": 20}}, ONE),
    "onenoflip": merge({"augment": {"hflip": 0.0}}, ONE),
    "light": merge({"augment": {"affine": 0.25, "color": 0.25, "crop": 0.15}}, ONE),
    "strong": merge({"augment": {"affine": 0.8, "shift": 0.15, "scale": 0.35, "rotate": 20.0, "color": 0.8}}, ONE),
}
#: As the rasterize stage's warning tells a user: coins' digits are drawn inside their coin
#: with the same z_order, and in file order the coin hides 32 of 122 regions.
DATASETS = merge(DATASETS, {"coins": {"rasterize": {"order": "area"}}})


def planned(params: Params, folder: Path) -> dict:
    """What train makes of `auto` for the preprocess folder: its train + val photos, the
    classes their masks hold, the folds and the steps per epoch."""
    train, ignore = params.train, params.classes.ignore_index
    return {
        "photos": len(entries(folder, "train")) + len(entries(folder, "val")),
        "classes": mask_classes(folder, ignore),
        "folds": fold_count(folder, train.folds, ignore),
        "steps_per_epoch": step_count(folder, train.steps_per_epoch, train.folds, ignore),
    }


def run(raw: dict, folder: Path, before: bool) -> dict:
    params, _ = prepare(raw, folder)
    n_train = len(entries(folder / "pre", "train"))
    budget = planned(params, folder / "pre")  # auto's choice, as train makes it
    steps = budget["steps_per_epoch"]
    if before:  # the old epoch: each training photo's crop once
        steps = max(1, math.ceil(n_train / params.train.batch_size))
    params = params.model_copy(update={"train": params.train.model_copy(update={"steps_per_epoch": steps})})
    start = time.perf_counter()
    summary = train(params, folder / "pre", folder / "train", folder, folder / "resume.pt")
    train_s = time.perf_counter() - start
    metrics = evaluate(params, folder / "pre", folder / "train", folder / "eval", folder)
    return {
        "steps": params.train.steps_per_epoch * params.train.epochs,
        "folds": budget["folds"],
        "train_images": n_train,
        "val_images": len(entries(folder / "pre", "val")),
        "crop": read_plan(folder / "pre").crop[0],
        "best_val_miou": summary["best_val_miou"],
        "test": metrics["test"],
        "train_s": train_s,
    }


def show_plan(base: dict, datasets: list[str], variants: list[str]) -> None:
    """Print each set's train + val photos, mask classes, folds and steps per epoch."""
    print("| dataset | variant | train + val photos | classes in the masks | folds | steps per epoch |")
    print("|---|---|---|---|---|---|")
    for dataset in datasets:
        if not Path(DATASETS[dataset]["fetch"]["source"]).exists():
            continue
        for variant in variants:
            with tempfile.TemporaryDirectory(prefix="segflow-plan-") as tmp:
                params, _ = prepare(merge(merge(base, DATASETS[dataset]), VARIANTS[variant]), Path(tmp))
                row = planned(params, Path(tmp) / "pre")
            print(
                f"| {dataset} | {variant} | {row['photos']} | {row['classes']} | {row['folds']} | "
                f"{row['steps_per_epoch']} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=["before", "now"])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--plan", action="store_true", help="only print what auto gives each set (no training)")
    args = parser.parse_args()
    base = yaml.safe_load(args.params.read_text())
    if args.plan:
        show_plan(base, args.datasets, args.variants)
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="segflow-budget-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/bench.db"
        for dataset in args.datasets:
            if not Path(DATASETS[dataset]["fetch"]["source"]).exists():
                print(f"{dataset}: absent, skipped", flush=True)
                continue
            for seed in args.seeds:
                for variant in args.variants:
                    raw = merge(merge(base, DATASETS[dataset]), VARIANTS[variant])
                    raw["seed"] = seed
                    raw["mlflow"] = {"experiment": f"{dataset}-{variant}", "model_name": f"{dataset}-{variant}"}
                    folder = Path(tmp) / dataset / f"{variant}-{seed}"
                    row = {"dataset": dataset, "variant": variant, "seed": seed}
                    row.update(run(raw, folder, variant == "before"))
                    results.append(row)
                    test = row["test"]
                    print(
                        f"{dataset} / {variant} / seed {seed}: mIoU {test['miou']:.3f} {test['miou_ci95']} on "
                        f"{test['images']} test images, {row['steps']} steps, train {row['train_s']:.0f} s",
                        flush=True,
                    )
                    if args.out:  # after every run: a long benchmark keeps what it measured
                        args.out.write_text(json.dumps(results, indent=1))
    print(f"\n{platform.node()}, {os.cpu_count()} cores, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    print(
        "| dataset | variant | seed | train / val / test images | steps | crop | test mIoU [95% CI] "
        "| weakest class IoU | train (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in results:
        test = row["test"]
        weakest = min((v, k) for k, v in test["iou"].items() if v is not None)
        low, high = test["miou_ci95"] or [float("nan")] * 2
        print(
            f"| {row['dataset']} | {row['variant']} | {row['seed']} | {row['train_images']} / {row['val_images']} / "
            f"{test['images']} | {row['steps']} | {row['crop']} | {test['miou']:.3f} [{low:.3f}, {high:.3f}] "
            f"| {weakest[1]} {weakest[0]:.3f} | {row['train_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
