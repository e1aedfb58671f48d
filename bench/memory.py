"""Benchmark: peak memory of preprocess and of training steps, for 300 and 1,000 photos.

Synthetic street scenes of 2048x1024 (Cityscapes' size) are made with the sample generator
(scripts/sample.py; --unique of them, about 1.3 s each here, and the larger sets are filled
with renamed copies, listed again in the VIA CSV: the pipeline handles every copy as a photo
of its own), then each step runs in a child process whose peak resident memory
(ru_maxrss) is read when it ends: fetch + rasterize, preprocess (measures, plans and stores
every image one at a time), and a few training steps (the crop dataset memory-maps one
stored image at a time). If memory were per dataset, the 1,000-photo row would be ~3x the
300-photo row. Disk used by the stored images is reported too.

    python bench/memory.py --counts 300 1000 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEP = """
import json, sys, time
from pathlib import Path
import yaml
from segflow.config import Params
folder, step, steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
raw = yaml.safe_load((Path(sys.argv[4])).read_text())
raw["fetch"]["source"] = str(folder / "data")
raw["mlflow"] = {"experiment": "memory", "model_name": "memory"}
params = Params.model_validate(raw)
start = time.perf_counter()
if step == "fetch":
    from segflow.data.fetch import fetch
    from segflow.data.rasterize import rasterize
    fetch(params, folder / "fetch")
    rasterize(params, folder / "fetch", folder / "masks")
elif step == "preprocess":
    from segflow.data.preprocess import preprocess
    preprocess(params, folder / "fetch", folder / "masks", folder / "pre")
else:
    import torch
    from segflow.training.distributed import ONE_PROCESS
    from segflow.training.trainer import Trainer
    trainer = Trainer(params, folder / "pre", ONE_PROCESS)
    trainer.model.train()
    for i, (images, masks) in enumerate(trainer.train_loader):
        if i == steps:
            break
        trainer.optimizer.zero_grad()
        trainer.loss_fn(trainer.model(images), masks).backward()
        trainer.optimizer.step()
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def child(folder: Path, step: str, steps: int, params: Path) -> dict:
    """Run one step in a fresh interpreter; its own peak RSS in MB (os.wait4) and wall time."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", STEP, str(folder), step, str(steps), str(params)],
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "TQDM_DISABLE": "1"},
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout.seek(0)
        stderr.seek(0)
        if process.returncode:
            raise SystemExit(f"{step} failed:\n{stderr.read()[-3000:]}")
        result = json.loads(stdout.read().strip().splitlines()[-1])
    return {"peak_mb": usage.ru_maxrss / 1024, **result}


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[300, 1000])
    parser.add_argument("--steps", type=int, default=20, help="training steps measured")
    parser.add_argument("--unique", type=int, default=300, help="scenes generated; larger sets reuse them")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "scripts"))
    from sample import generate_sample

    rows = []
    with tempfile.TemporaryDirectory(prefix="segflow-memory-") as shared:
        unique = Path(shared) / "unique"
        start = time.perf_counter()
        generate_sample(unique, n_images=args.unique, width=2048, height=1024, seed=0)
        made = time.perf_counter() - start
        for count in args.counts:
            rows.append(measure(unique, count, made, args))
    print(f"\n{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}, synthetic 2048x1024 scenes")
    print(
        "| photos | fetch+rasterize peak MB | preprocess peak MB | train peak MB "
        f"({args.steps} steps) | stored MB | plan |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['images']} | {r['fetch']['peak_mb']:.0f} | {r['preprocess']['peak_mb']:.0f} | "
            f"{r['train']['peak_mb']:.0f} | {r['stored_mb']:.0f} | {r['plan']} |"
        )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))


def fill(unique: Path, target: Path, count: int) -> None:
    """`count` photos in `target`: the unique scenes, then renamed copies, in one VIA CSV."""
    target.mkdir(parents=True)
    header, *lines = (unique / "via_region_data.csv").read_text().splitlines()
    names = sorted(p.name for p in unique.glob("*.jpg"))
    out = [header]
    for i in range(count):
        name = names[i % len(names)]
        new = name if i < len(names) else f"copy{i // len(names)}_{name}"
        os.link(unique / name, target / new)
        out += [line.replace(name, new, 1) for line in lines if line.startswith(name + ",")]
    (target / "via_region_data.csv").write_text("\n".join(out) + "\n")


def measure(unique: Path, count: int, made: float, args: argparse.Namespace) -> dict:
    """fetch + rasterize, preprocess and training steps on `count` photos, each in a child."""
    with tempfile.TemporaryDirectory(prefix=f"segflow-memory-{count}-") as tmp:
        folder = Path(tmp)
        fill(unique, folder / "data", count)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        row = {"images": count, "generate_s": made}
        for step in ("fetch", "preprocess", "train"):
            row[step] = child(folder, step, args.steps, args.params)
            print(f"{count} images, {step}: {row[step]}", flush=True)
        row["stored_mb"] = disk_mb(folder / "pre")
        row["source_mb"] = disk_mb(folder / "data")
        from segflow.prepared import read_plan

        plan = read_plan(folder / "pre")
        row["plan"] = plan.model_dump(mode="json", include={"long_side", "crop", "tile"})
        return row


if __name__ == "__main__":
    main()
