"""A 6-trial `segflow sweep` on a real dataset (docs/benchmarks.md, "Sweeps (issue 24)").

A clean clone of HEAD in a scratch folder, fetch.source = via-heads-balloon (36 photos, one
class), a fixed 128 px working size and short epochs; `dvc repro` trains the defaults (the
first @champion), then an Optuna TPE search of 6 trials over train.lr (log range) and
train.loss, 2 DVC queue workers, and `segflow promote` on the best. Prints a Markdown table:
each trial's params, validation mIoU (what ranks), wall time and training time; the best
trial's and the defaults' full-resolution test mIoU; the sweep's overhead per trial.

    flock /tmp/segflow-cpu.lock python bench/sweep.py --scratch /tmp/segflow-sweep-bench
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BALLOON = ROOT.parent / "shared" / "datasets" / "via-heads-balloon"
BIN = Path(sys.executable).parent


def run(args: list[str], cwd: Path, env: dict, timeout: int = 1800) -> str:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/segflow-sweep-bench"))
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    shutil.rmtree(args.scratch, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(PATH=f"{BIN}{os.pathsep}{env['PATH']}", COLUMNS="160", GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b")
    env.update(GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b")
    run(["git", "clone", "-q", str(ROOT), str(args.scratch)], ROOT, env)
    root = args.scratch
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["fetch"].update(source=str(BALLOON), annotations=["*/via_region_data.json"], default_label="head")
    params["classes"]["names"] = "auto"
    params["preprocess"]["image_size"] = 128
    params["train"].update(epochs=4, steps_per_epoch=8)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.monotonic()
    run([str(BIN / "dvc"), "repro"], root, {**env, "OMP_NUM_THREADS": "2"})
    baseline_s = time.monotonic() - start
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-qm", "balloon, 128 px, 4 x 8 steps"], root, env)
    defaults = json.loads((root / "artifacts/evaluate/metrics.json").read_text())["test"]

    command = ["segflow", "sweep", "bench", "-S", "train.lr=0.0003..0.01:log", "-S", "train.loss=ce,ce+dice,focal"]
    command += ["--trials", str(args.trials), "--seed", "0", "-j", str(args.jobs), "--poll", "2"]
    start = time.monotonic()
    out = run([str(BIN / command[0]), *command[1:]], root, env, timeout=3600)
    sweep_s = time.monotonic() - start
    print(out[-6000:])

    import mlflow

    store = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    state = json.loads((root / "artifacts/sweeps/bench/state.json").read_text())
    rows = []
    for trial in state["trials"]:
        test = client.get_run(trial["run_id"]).data.metrics.get("test_miou") if trial["status"] == "success" else None
        rows.append({**trial, "test_miou": test})
    rows.sort(key=lambda t: -(t["val_miou"] or -1))
    print(f"\nbaseline dvc repro {baseline_s:.0f} s (defaults: lr 0.003, ce+dice); sweep {sweep_s:.0f} s\n")
    header = "rank | trial | train.lr | train.loss | val mIoU | test mIoU | wall s | train s | outside training s"
    print(f"| {header} |")
    print("|---|---|---|---|---|---|---|---|---|")
    for rank, t in enumerate(rows, 1):
        p = t["params"]
        outside = t["wall_s"] - t["train_s"] if t["wall_s"] and t["train_s"] else None
        cells = [rank, t["name"], f"{p['train.lr']:.5f}", p["train.loss"], _f(t["val_miou"]), _f(t["test_miou"])]
        cells += [_f(t["wall_s"], 0), _f(t["train_s"], 0), _f(outside, 0)]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    ci = defaults.get("miou_ci95") or []
    interval = ", ".join(f"{v:.3f}" for v in ci)
    print(f"\ndefaults' test mIoU {defaults['miou']:.3f} [{interval}] ({defaults['images']} images)")


def _f(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    main()
