"""Benchmark: what MLflow logging costs a training epoch, team server vs local SQLite.

Two stores side by side in one run:
  local SQLite  - segflow's default: sqlite:///mlflow.db, artifacts in a local folder,
                  no server (what `dvc repro` uses without MLFLOW_TRACKING_URI);
  team server   - the README's "Team setup": `mlflow server` on PostgreSQL with artifacts
                  in S3 (moto's server), the client given only the server's URL. All three
                  run on this machine (tests/servers.py starts them on 127.0.0.1), so the
                  figures hold the HTTP and database work, not a network's latency.

Per epoch the train stage makes one logging call: mlflow.log_metrics of the history row
(7 values, step = epoch), measured here as the log_batch it sends, over --epochs simulated
epochs, alternating the two stores epoch by epoch so the shared machine's noise hits both.
Once per run (not per epoch, reported apart): the run's start (create the run, log the
params.yaml's sections as params, the 3 tags, a plan.json artifact) and its end (the
history.csv artifact, the best-epoch metrics, the run closed). No training happens.

    python bench/tracking_overhead.py --epochs 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from segflow.config import load_params

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the servers the tests start (tests/servers.py)
from servers import S3_CREDENTIALS, mlflow_server, moto_server, postgres, s3_client  # noqa: E402

BUCKET = "segflow-team"
ROW = ("train_loss", "val_loss", "val_miou", "val_mdice", "lr", "images_per_s", "seconds")


def flat_params() -> list[Param]:
    """params.yaml, validated, one param per key of each section, as the train stage logs it."""
    flat: dict[str, object] = {}
    for section, values in load_params(REPO / "params.yaml").model_dump(mode="json").items():
        flat.update({f"{section}.{k}": v for k, v in values.items()} if isinstance(values, dict) else {section: values})
    return [Param(key, str(value)) for key, value in flat.items()]


def timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    params = flat_params()
    tags = [RunTag("git_commit", "0" * 40), RunTag("git_dirty", "false"), RunTag("data_md5", "0" * 32)]
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tracking-bench-")))
        (work / "plan.json").write_text(json.dumps({"long_side": 320, "crop": [128, 128], "tile": [320, 320]}))
        history = work / "history.csv"
        history.write_text(
            ",".join(["epoch", *ROW]) + "\n" + "".join(f"{e},1,1,1,1,1,1,1\n" for e in range(args.epochs))
        )

        started = time.perf_counter()
        endpoint = stack.enter_context(moto_server(work / "moto.log"))
        s3_client(endpoint).create_bucket(Bucket=BUCKET)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_REGISTRY", "AWS_"))}
        env.update(S3_CREDENTIALS, MLFLOW_S3_ENDPOINT_URL=endpoint)
        team = stack.enter_context(
            mlflow_server(stack.enter_context(postgres()), f"s3://{BUCKET}/mlflow", work / "mlflow.log", env)
        )
        print(f"servers up in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        stores = {
            "local SQLite": (MlflowClient(f"sqlite:///{work / 'mlflow.db'}"), (work / "mlartifacts").as_uri()),
            "team server (PostgreSQL + S3)": (MlflowClient(team), None),
        }
        starts, ends, epochs, runs = {}, {}, {name: [] for name in stores}, {}
        for name, (client, location) in stores.items():
            experiment = client.create_experiment("bench", artifact_location=location)

            def start(client=client, experiment=experiment, name=name) -> None:
                runs[name] = run = client.create_run(experiment).info.run_id
                for chunk in range(0, len(params), 100):  # log_batch takes at most 100 params
                    client.log_batch(run, params=params[chunk : chunk + 100])
                client.log_batch(run, tags=tags)
                client.log_artifact(run, str(work / "plan.json"), "dataset")

            starts[name] = timed(start)
        for epoch in range(1, args.epochs + 1):
            for name, (client, _) in stores.items():
                now = int(time.time() * 1000)
                row = [Metric(key, 0.5 + epoch / 1000, now, epoch) for key in ROW]
                epochs[name].append(timed(lambda client=client, name=name, row=row: client.log_batch(runs[name], row)))
        for name, (client, _) in stores.items():

            def end(client=client, name=name) -> None:
                client.log_artifact(runs[name], str(history))
                now = int(time.time() * 1000)
                client.log_batch(runs[name], [Metric("best_val_miou", 0.9, now, 0), Metric("best_epoch", 7, now, 0)])
                client.set_terminated(runs[name])

            ends[name] = timed(end)

    local = statistics.median(epochs["local SQLite"])
    print(f"\n{args.epochs} epochs, {len(params)} params, {len(ROW)} metrics per epoch\n")
    print("| store | per epoch, median (ms) | mean (ms) | p95 (ms) | all epochs (s) | run start (ms) | run end (ms) |")
    print("|---|---|---|---|---|---|---|")
    for name in stores:
        times = sorted(epochs[name])
        p95 = times[min(len(times) - 1, int(0.95 * len(times)))]
        print(
            f"| {name} | {1000 * statistics.median(times):.1f} ({statistics.median(times) / local:.1f}x) "
            f"| {1000 * statistics.mean(times):.1f} | {1000 * p95:.1f} | {sum(times):.2f} "
            f"| {1000 * starts[name]:.0f} | {1000 * ends[name]:.0f} |"
        )


if __name__ == "__main__":
    main()
