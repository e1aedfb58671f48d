"""Benchmark: the served model's size, test mIoU and latency: PyTorch eager vs ONNX fp32 vs int8.

For each trained checkpoint (default: artifacts/train/model.pt, the encoder params.yaml
names; add others with --checkpoint), side by side in one run:

  size     the PyTorch checkpoint, model.onnx and model.int8.onnx on disk (segflow.export)
  mIoU     of each on the frozen test split (artifacts/preprocess), at each test image's
           original size through the one prediction path (segflow.inference.segment), and
           the int8 loss
  latency  one 512x512 input (batch 1) through each network, the same inputs; the runs
           are interleaved round-robin so that the shared machine's noise hits every
           runtime alike; medians, and ratios against PyTorch eager. Also at each
           checkpoint's inference tile: there is no single served input size any more
           (an upload is resized to the planned working resolution, then run whole when it
           fits one tile, else in overlapping tiles, several to a batch), so the tile is
           the largest image the service's network gets. These are network times, not a
           whole request (bench/http_load.py measures that)

--train ENCODER trains a missing encoder first, in a throwaway MLflow store (cached in
artifacts/bench/checkpoints/ENCODER.pt, retrained when the data's plan changed), so the
comparison is reproducible from scratch.

    python bench/export_size_latency.py --train tu-efficientnet_lite0 --out artifacts/bench/export.json

--exporter (repeatable) compares torch.onnx's exporters on the same checkpoints:

    python bench/export_size_latency.py --exporter dynamo --exporter torchscript --repeats 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segflow.config import Params, load_params
from segflow.export.export import EXPORTERS, FP32_FILE, INT8_FILE, export_checkpoint
from segflow.inference.network import load_checkpoint
from segflow.prepared import read_plan
from segflow.registry.scoring import load_test_split
from segflow.runtime.onnx_file import session

CACHE = Path("artifacts/bench/checkpoints")


def train_checkpoint(params: Params, encoder: str, data: Path) -> Path:
    """Train `encoder` with params.yaml's other settings; cached. Returns the checkpoint.

    A cached checkpoint is retrained when its working resolution and tile are not those
    of `data`'s plan (one from before the planned-resolution layout has neither)."""
    path = CACHE / f"{encoder}.pt"
    if path.is_file():
        meta = torch.load(path, map_location="cpu", weights_only=True)
        plan = read_plan(data)
        if (meta.get("long_side"), meta.get("tile")) == (plan.long_side, list(plan.tile)):
            return path
    from segflow.training.train import train

    raw = params.model_dump(mode="json")
    raw["model"].update(encoder=encoder, encoder_weights=None)
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        train(Params.model_validate(raw), data, Path(tmp) / "out", root=Path(tmp), resume_file=Path(tmp) / "resume.pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(Path(tmp) / "out" / "model.pt", path)
    return path


def latency(runners: dict[str, callable], image: np.ndarray, repeats: int) -> dict[str, float]:
    """Median ms per call of each runner on `image`, interleaved round-robin."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        run(image)  # warm-up: allocations, onnxruntime's first-run set-up
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(image)
            times[name].append(1000 * (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("artifacts/preprocess"))
    parser.add_argument(
        "--checkpoint",
        type=Path,
        action="append",
        default=[],
        help="a trained checkpoint (repeatable); default artifacts/train/model.pt",
    )
    parser.add_argument(
        "--train",
        action="append",
        default=[],
        metavar="ENCODER",
        help="also compare this encoder, training it first if it is not cached",
    )
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[512],
        help="latency input sides (default %(default)s, plus each checkpoint's inference tile)",
    )
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--exporter",
        action="append",
        choices=EXPORTERS,
        help=f"torch.onnx exporter (repeatable: one row each); default {EXPORTERS[0]}, as `segflow export`",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads of PyTorch and onnxruntime alike (default 0: their own default, one per core)",
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    params = load_params(args.params)
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoints = args.checkpoint or [Path("artifacts/train/model.pt")]
    checkpoints += [train_checkpoint(params, encoder, args.data) for encoder in args.train]
    split = load_test_split(args.data)

    rows, runners = [], {}
    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    exporters = args.exporter or [EXPORTERS[0]]
    for checkpoint, exporter in ((c, e) for c in checkpoints for e in exporters):
        model, meta = load_checkpoint(checkpoint)
        out = work / f"{meta.encoder}-{exporter}"
        start = time.perf_counter()
        report = export_checkpoint(model, meta, params, args.data, out, exporter)
        export_seconds = time.perf_counter() - start
        name = f"{meta.arch} {meta.encoder}" + (f" ({exporter})" if len(exporters) > 1 else "")
        fp32, int8 = session(out / FP32_FILE, args.threads), session(out / INT8_FILE, args.threads)
        runners[(name, "torch")] = lambda x, model=model: model(torch.from_numpy(x))
        runners[(name, "fp32")] = lambda x, s=fp32: s.run(["mask"], {"image": x})
        runners[(name, "int8")] = lambda x, s=int8: s.run(["mask"], {"image": x})
        rows.append(
            {
                "model": name,
                "checkpoint": str(checkpoint),
                "exporter": exporter,
                "long_side": meta.long_side,
                "tile": list(meta.tile),
                "parameters": sum(p.numel() for p in model.parameters()),
                "bytes": {
                    "torch": Path(checkpoint).stat().st_size,
                    **{k: report["bytes"][k] for k in ("fp32", "int8")},
                },
                "miou": report["miou"],
                "int8_miou_loss": report["int8_miou_loss"],
                "agreement": report["agreement"],
                "default": report["default"],
                "export_seconds": export_seconds,
            }
        )
    shapes = list(dict.fromkeys([*((side, side) for side in args.sizes), *(tuple(row["tile"]) for row in rows)]))
    sizes = [f"{height}x{width}" for height, width in shapes]
    for row in rows:
        row["ms"], row["speedup_vs_eager"] = {}, {}
    for size, shape in zip(sizes, shapes):
        image = np.random.default_rng(0).uniform(0, 255, (1, 3, *shape)).astype(np.float32)
        with torch.inference_mode():
            medians = latency({f"{k[0]}|{k[1]}": v for k, v in runners.items()}, image, args.repeats)
        for row in rows:
            ms = {runtime: medians[f"{row['model']}|{runtime}"] for runtime in ("torch", "fp32", "int8")}
            row["ms"][size] = ms
            row["speedup_vs_eager"][size] = {r: ms["torch"] / ms[r] for r in ("fp32", "int8")}
    shutil.rmtree(work, ignore_errors=True)

    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch_threads": torch.get_num_threads(),
        "latency_sizes": sizes,
        "repeats": args.repeats,
        "test_images": len(split),
        "test_resolution": "original",
        "rows": rows,
    }
    header = "| model | weights | PyTorch .pt | ONNX fp32 | ONNX int8 | test mIoU PyTorch / fp32 / int8 | int8 loss"
    print(f"{header} | export |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        mb, miou = row["bytes"], row["miou"]
        print(
            f"| {row['model']} | {row['parameters'] / 1e6:.1f} M | {mb['torch'] / 1e6:.1f} MB "
            f"| {mb['fp32'] / 1e6:.1f} MB"
            f" | {mb['int8'] / 1e6:.1f} MB | {miou['torch']:.4f} / {miou['fp32']:.4f} / {miou['int8']:.4f}"
            f" | {100 * row['int8_miou_loss']:+.2f} pt | {row['export_seconds']:.0f} s |"
        )
    print("\n| model | input | eager ms | ONNX fp32 ms | ONNX int8 ms | fp32 vs eager | int8 vs eager |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        for size in sizes:
            ms, x = row["ms"][size], row["speedup_vs_eager"][size]
            print(
                f"| {row['model']} | {size} | {ms['torch']:.1f} | {ms['fp32']:.1f} | {ms['int8']:.1f} | "
                f"{x['fp32']:.2f}× | {x['int8']:.2f}× |"
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
