"""Benchmark: megapixels per second of the one inference path at full resolution.

The trained checkpoint (artifacts/train/model.pt) is exported to ONNX fp32 and int8
(segflow.export), then one synthetic street scene of about 1 MP (1152x864) and one
of about 4 MP (2304x1728), made by the sample generator's scene painter, are segmented by
`segflow.inference.segment.Segmenter` with PyTorch eager, onnxruntime fp32 and int8 runners,
side by side in one process: input at full resolution, mask back at full resolution. Two
settings: the model's planned working resolution (its ``long_side``), and the photo's own
resolution in overlapping tiles (``long_side`` None), which is what a plan with small
objects gives large photos.

    python bench/inference_speed.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from segflow.export.export import export_onnx
from segflow.export.quantize import calibration_images, quantize_int8
from segflow.inference.network import load_checkpoint
from segflow.inference.segment import Segmenter, onnx_runner, torch_runner
from segflow.runtime.onnx_file import session

REPO = Path(__file__).resolve().parents[1]
SIZES = {"1 MP": (864, 1152), "4 MP": (1728, 2304)}


def scene(height: int, width: int) -> np.ndarray:
    sys.path.insert(0, str(REPO / "scripts"))
    from sample_scene import draw_scene

    image, _ = draw_scene(np.random.default_rng(0), width, height)
    return np.ascontiguousarray(image[:, :, ::-1])  # BGR -> RGB


def timed(segmenter: Segmenter, image: np.ndarray, repeats: int) -> float:
    segmenter.predict_one(image)  # warm-up: first shapes pay one-off set-up costs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        segmenter.predict_one(image)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=REPO / "artifacts/train/model.pt")
    parser.add_argument("--data", type=Path, default=REPO / "artifacts/preprocess")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    net, meta = load_checkpoint(args.checkpoint)
    tile = meta.tile
    rows = []
    with tempfile.TemporaryDirectory(prefix="segflow-speed-") as tmp:
        fp32 = export_onnx(net, Path(tmp) / "model.onnx", tile)
        int8 = quantize_int8(fp32, Path(tmp) / "model.int8.onnx", calibration_images(args.data, 32, 0))
        runners = {
            "torch eager": torch_runner(net),
            "onnx fp32": onnx_runner(session(fp32)),
            "onnx int8": onnx_runner(session(int8)),
        }
        for label, (height, width) in SIZES.items():
            image = scene(height, width)
            for setting, long_side in (("planned", meta.long_side), ("own resolution, tiled", None)):
                seconds = {
                    name: timed(Segmenter(run, long_side, tile), image, args.repeats) for name, run in runners.items()
                }
                row = {
                    "photo": label,
                    "pixels": height * width,
                    "setting": setting,
                    "long_side": long_side,
                    "seconds": seconds,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(
        f"\n{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"{time.strftime('%Y-%m-%d')}; tile {tile[0]}x{tile[1]}, median of {args.repeats}"
    )
    print("| photo | setting | torch eager MP/s | ONNX fp32 MP/s | ONNX int8 MP/s | fp32 / eager | int8 / eager |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mp = r["pixels"] / 1e6
        s = r["seconds"]
        print(
            f"| {r['photo']} | {r['setting']} | {mp / s['torch eager']:.1f} | {mp / s['onnx fp32']:.1f} | "
            f"{mp / s['onnx int8']:.1f} | {s['torch eager'] / s['onnx fp32']:.2f}x | "
            f"{s['torch eager'] / s['onnx int8']:.2f}x |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
