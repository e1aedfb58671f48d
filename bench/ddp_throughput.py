"""Benchmark: training throughput with 1 and N DDP processes, and the step-time options.

Part 1 runs the real train stage (`pipeline/train.py`, torchrun for N > 1) on the sample's
preprocessed data (`dvc repro preprocess` first) with the project's params, `--epochs`
epochs: 1 process in NCHW, 1 with channels_last, and N processes, one after the other,
and reads images/s from each history.csv (the mean over the epochs after the first,
which warms up). `train.amp` is CUDA-only, so on the CPU these runs are float32. Runs
are tracked in a throwaway MLflow store.

Part 2 times forward+backward steps of the same network on one process: fp32 vs
channels_last memory format, and bf16 autocast on the CPU (fp16 autocast on CUDA).

    python bench/ddp_throughput.py --processes 2 --epochs 4
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


#: Stage runs, side by side: train params over params.yaml's.
STAGE_VARIANTS = {
    "1 process, NCHW": {"processes": 1, "channels_last": False},
    "1 process, channels_last": {"processes": 1, "channels_last": True},
    "N processes, channels_last": {"channels_last": True},
}


def stage_rate(train: dict, epochs: int, work: Path, name: str) -> tuple[float, float]:
    """(images/s, seconds) per epoch of the train stage, means over the epochs after the first."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"].update(epochs=epochs, **train)
    params = work / f"params-{name}.yaml"
    params.write_text(yaml.safe_dump(raw))
    out = work / f"out-{name}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    command = [
        sys.executable,
        str(ROOT / "pipeline" / "train.py"),
        "--params",
        str(params),
        "--data",
        str(ROOT / "artifacts" / "preprocess"),
        "--out",
        str(out),
        "--resume",
        str(work / f"resume-{name}.pt"),
        "--report",
        str(ROOT / "artifacts" / "report"),
        "--classes",
        str(ROOT / "artifacts" / "fetch" / "classes.yaml"),
    ]
    subprocess.run(command, cwd=work, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with (out / "history.csv").open() as stream:
        rows = list(csv.DictReader(stream))[1:]
    return (
        sum(float(r["images_per_s"]) for r in rows) / len(rows),
        sum(float(r["seconds"]) for r in rows) / len(rows),
    )


def step_times(batch: int, crop: tuple[int, int], steps: int) -> dict[str, float]:
    """Seconds per training step (forward, loss, backward) for each memory format/precision."""
    from segflow.config import load_params
    from segflow.training.model import model_from_params

    params = load_params(ROOT / "params.yaml")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    low = torch.bfloat16 if device.type == "cpu" else torch.float16
    images = torch.rand(batch, 3, *crop, device=device) * 255
    masks = torch.randint(0, len(params.classes.names), (batch, *crop), device=device)
    results = {}
    for name, channels_last, autocast in (
        ("fp32", False, False),
        ("fp32 channels_last", True, False),
        (f"{str(low).split('.')[-1]} autocast", False, True),
        (f"{str(low).split('.')[-1]} autocast channels_last", True, True),
    ):
        torch.manual_seed(0)
        model = model_from_params(params).to(device).train()
        inputs = images
        if channels_last:
            model, inputs = model.to(memory_format=torch.channels_last), images.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)
        times = []
        for _ in range(steps + 2):  # two warm-up steps
            start = time.perf_counter()
            optimizer.zero_grad()
            with torch.autocast(device.type, dtype=low, enabled=autocast):
                logits = model(inputs)
            loss = torch.nn.functional.cross_entropy(logits.float(), masks)
            loss.backward()
            optimizer.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        results[name] = sorted(times[2:])[len(times[2:]) // 2]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant in part 2")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        rates = {}
        for index, (name, train) in enumerate(STAGE_VARIANTS.items()):
            train = {"processes": args.processes, **train}
            rates[name.replace("N processes", f"{train['processes']} processes")] = (
                train["processes"],
                *stage_rate(train, args.epochs, work, str(index)),
            )
    rows = list(rates.values())
    one = rows[0][1]
    print("\n| train stage | images/s | epoch s | vs the first |")
    print("|---|---|---|---|")
    for name, (_, rate, seconds) in rates.items():
        print(f"| {name} | {rate:.2f} | {seconds:.1f} | {rate / one:.2f}x |")
    (_, single, _), (processes, many, _) = rows[-2], rows[-1]
    print(
        f"\n{processes} processes vs 1 with the same settings: {many / single:.2f}x, scaling efficiency "
        f"{many / single / processes:.0%}"
    )

    from segflow.prepared import read_plan

    plan = read_plan(ROOT / "artifacts")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    times = step_times(raw["train"]["batch_size"], plan.crop, args.steps)
    base = times["fp32"]
    print(f"\n| step ({raw['train']['batch_size']} crops of {list(plan.crop)}) | s/step | vs fp32 |")
    print("|---|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds:.3f} | {base / seconds:.2f}x |")


if __name__ == "__main__":
    main()
