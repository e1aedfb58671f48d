"""Benchmark: plain U-Net vs U-Net + GloRe unit, same encoder and params, several seeds.

For each dataset the pipeline's fetch, rasterize and preprocess run once (seed 0: the
same split and plan for every run); then each variant trains and is evaluated once per
seed (``seed``: initial weights, crops, augmentation, batch order) with params.yaml's
settings. Test scores are the evaluate stage's, at each test image's original
resolution. Runs go to a throwaway MLflow store.

    python bench/graph.py --datasets sample cheetah --seeds 0 1 2 --out graph.json

Datasets and their params are those of bench/resolution.py. The weakest class is the one
with the lowest mean test IoU under the first variant; every variant is shown on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from resolution import DATASETS, REPO, merge, prepare  # noqa: E402

from segflow.config import Params  # noqa: E402
from segflow.inference.network import load_checkpoint  # noqa: E402
from segflow.training.evaluate import evaluate  # noqa: E402
from segflow.training.train import train  # noqa: E402

VARIANTS = {
    "plain": {"model": {"graph": "none", "graph_decoder": False}},
    "glore": {"model": {"graph": "glore", "graph_decoder": False}},
    "glore-decoder": {"model": {"graph": "glore", "graph_decoder": True}},
}


def run(params: Params, folder: Path, name: str) -> dict:
    """Train and evaluate `params` on the prepared `folder`; scores, weights and times."""
    out = folder / name
    out.mkdir(parents=True)
    start = time.perf_counter()
    train(params, folder / "pre", out / "train", out, out / "resume.pt")
    train_s = time.perf_counter() - start
    test = evaluate(params, folder / "pre", out / "train", out / "eval", out)["test"]
    model, _ = load_checkpoint(out / "train" / "model.pt")
    return {
        "miou": test["miou"],
        "miou_ci95": test["miou_ci95"],
        "iou": test["iou"],
        "images": test["images"],
        "weights": sum(p.numel() for p in model.parameters()),
        "train_s": train_s,
        "ms_per_image": test["ms_per_image"],
    }


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {deviation:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=["sample"])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["plain", "glore"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--table", type=Path, help="only print the table of an earlier --out file")
    args = parser.parse_args()
    if args.table:
        rows = json.loads(args.table.read_text())
        datasets = list(dict.fromkeys(r["dataset"] for r in rows))
        table(rows, datasets, list(dict.fromkeys(r["variant"] for r in rows)), sorted({r["seed"] for r in rows}))
        return
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    if args.epochs:
        base["train"]["epochs"] = args.epochs
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="segflow-graph-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/bench.db"
        for dataset in args.datasets:
            folder = Path(tmp) / dataset
            raw = merge(base, DATASETS[dataset])
            raw["mlflow"] = {"experiment": dataset, "model_name": dataset}
            prepared, _ = prepare(raw, folder)
            for variant in args.variants:
                for seed in args.seeds:
                    params = Params.model_validate(
                        merge(prepared.model_dump(mode="json"), {**VARIANTS[variant], "seed": seed})
                    )
                    row = {"dataset": dataset, "variant": variant, "seed": seed}
                    row.update(run(params, folder, f"{variant.replace(' ', '')}-{seed}"))
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    table(rows, args.datasets, args.variants, args.seeds)


def table(rows: list[dict], datasets: list[str], variants: list[str], seeds: list[int]) -> None:
    """The markdown table of `rows`: per dataset and variant, mean ± sd over the seeds."""
    print(
        f"\n| dataset (test images) | variant | test mIoU (mean ± sd over seeds {seeds}) | per seed "
        "| weakest class IoU | weights | train s | CPU ms / test image |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for dataset in datasets:
        # The weakest class: the lowest mean test IoU of the first variant's runs (classes
        # absent from the test split have no IoU).
        first = [r for r in rows if (r["dataset"], r["variant"]) == (dataset, variants[0])]
        scored = [name for name in first[0]["iou"] if all(r["iou"][name] is not None for r in first)]
        weakest = min(scored, key=lambda name: statistics.mean(r["iou"][name] for r in first))
        for variant in variants:
            runs = [r for r in rows if (r["dataset"], r["variant"]) == (dataset, variant)]
            per_seed = ", ".join(f"{r['miou']:.3f}" for r in runs)
            print(
                f"| {dataset} ({runs[0]['images']}) | {variant} | {spread([r['miou'] for r in runs])} "
                f"| {per_seed} "
                f"| {weakest}: {spread([r['iou'][weakest] for r in runs])} | {runs[0]['weights']:,} "
                f"| {spread([r['train_s'] for r in runs])} | {spread([r['ms_per_image'] for r in runs])} |"
            )


if __name__ == "__main__":
    main()
