"""Benchmark: random init vs the offline ImageNet encoder, same data, epochs and seed.

Variants: the current default (resnet18, random), EfficientNet-Lite0 random, and
EfficientNet-Lite0 from the packaged ImageNet weights (`encoder_weights: imagenet-offline`).
Each trains with segflow.training.train.train into a throwaway MLflow store; it reports test mIoU
and Dice, and the first epoch whose val mIoU reaches 90 % of the run's best (history.csv).

    python bench/pretrained.py --dataset sample   # artifacts/preprocess (after dvc repro)
    python bench/pretrained.py --dataset photos   # 7 real photos from ../shared/datasets
    python bench/pretrained.py --dataset sizes    # parameters, file size, CPU latency

"photos": the 7 real photos, 5 folds, described in bench/photos.py.

"sizes" times one forward pass of one input (batch 1). There is no single input size any
more (each image is resized to the planned working resolution and run in tiles): the
input is --size if given, else a fixed ``preprocess.image_size``, else the inference tile
of the plan in --data (what the network sees per pass when serving that data).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from segflow.config import OFFLINE_ENCODER
from segflow.inference.network import build_model
from segflow.prepared import PLAN, read_plan

sys.path.insert(0, str(Path(__file__).parent))
from photos import REPO, run_variants  # noqa: E402

VARIANTS = {
    "resnet18, random (first default)": {"model": {"encoder": "resnet18", "encoder_weights": None}},
    "EfficientNet-Lite0, random": {"model": {"encoder": OFFLINE_ENCODER, "encoder_weights": None}},
    "EfficientNet-Lite0, imagenet-offline": {
        "model": {"encoder": OFFLINE_ENCODER, "encoder_weights": "imagenet-offline"}
    },
}


def input_size(size: int | None, image_size: object, data: Path) -> tuple[int, int]:
    """(height, width) of the timed input: `size`, a fixed image_size, or the plan's tile."""
    if size:
        return size, size
    if isinstance(image_size, int):
        return image_size, image_size
    if isinstance(image_size, list):
        return int(image_size[0]), int(image_size[1])
    if not (data / PLAN).is_file():
        raise SystemExit(f"preprocess.image_size is {image_size!r} and {data / PLAN} is absent: pass --size")
    height, width = read_plan(data).tile
    return height, width


def sizes(num_classes: int, size: tuple[int, int]) -> list[dict]:
    """Parameters, checkpoint bytes and CPU latency (batch 1) of each encoder's U-Net."""
    rows = []
    x = torch.full((1, 3, *size), 128.0)
    for encoder in ("resnet18", "resnet34", OFFLINE_ENCODER):
        model = build_model("Unet", encoder, num_classes).eval()
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        with torch.no_grad():
            model(x)
            times = []
            for _ in range(10):
                start = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - start)
        rows.append(
            {
                "encoder": encoder,
                "input": list(size),
                "parameters": sum(p.numel() for p in model.parameters()),
                "encoder_parameters": sum(p.numel() for p in model.net.encoder.parameters()),
                "bytes": buffer.getbuffer().nbytes,
                "ms": 1000 * float(np.median(times)),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["sample", "photos", "sizes"], default="sample")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--data", type=Path, default=REPO / "artifacts/preprocess", help="for --dataset sample")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--size", type=int, help="--dataset sizes: square input side (default: see above)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    # One thread: on the shared 2-core machine, two threads per process thrash.
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base = yaml.safe_load(args.params.read_text())
    base["train"]["epochs"] = args.epochs
    print(
        f"{platform.node()} {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}",
        flush=True,
    )
    if args.dataset == "sizes":
        size = input_size(args.size, base["preprocess"]["image_size"], args.data)
        rows = sizes(len(base["classes"]["names"]), size)
        print(
            "| encoder | U-Net parameters | of which encoder | checkpoint (MB) "
            f"| CPU latency, 1 input of {size[0]}x{size[1]} (ms) |"
        )
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['encoder']} | {r['parameters'] / 1e6:.2f} M | {r['encoder_parameters'] / 1e6:.2f} M "
                f"| {r['bytes'] / 1e6:.1f} | {r['ms']:.0f} |"
            )
    else:
        rows = run_variants(base, VARIANTS, args.dataset, args.data)
        print(
            f"\n| {args.dataset} | test mIoU | test Dice | epochs to 90 % of best val mIoU | best epoch "
            "| train time (s) |"
        )
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['variant']} | {r['test_miou']:.3f} | {r['test_mdice']:.3f} "
                f"| {', '.join(map(str, r['epochs_to_90']))} | {', '.join(map(str, r['best_epoch']))} "
                f"| {r['seconds']:.0f} |"
            )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
