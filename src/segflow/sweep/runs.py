"""The sweep in MLflow: one parent run, each trial's run its child, the best as @candidate.

The train stage tags its run ``dvc.exp_name`` (DVC tells a queued stage its experiment's
name), so a trial's run is found by that tag and made a child by MLflow's own
``mlflow.parentRunId`` tag: nothing is passed to the stage, whose code stays as it is. A trial
that failed before its run started (bad params) gets a FAILED child holding its error.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow
import yaml
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException

from segflow.config import Params
from segflow.registry import tracking
from segflow.sweep.space import SweepSpec
from segflow.sweep.state import Trial

__all__ = ["start_parent", "end_parent", "collect_trial", "record_failure", "crown_candidate", "VALIDATION_METRIC"]

#: What ranks the trials: the checkpoint's validation mIoU (the test split never chooses).
VALIDATION_METRIC = "best_val_miou"
SWEEP_TAG = "segflow.sweep"


def _client(root: Path) -> mlflow.MlflowClient:
    tracking.configure(root)
    return mlflow.MlflowClient()


def start_parent(root: Path, params: Params, name: str, spec: SweepSpec, jobs: int, run_id: str | None) -> str:
    """Create the sweep's parent run (or mark a resumed one running again); its id."""
    client = _client(root)
    if run_id is not None:
        try:
            client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            client.set_tag(run_id, "sweep.status", "running")
            return run_id
        except MlflowException:
            pass  # the store was reset: start a new parent
    experiment = tracking.experiment_id(params.mlflow.experiment, root)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=60)
    tags = {SWEEP_TAG: name, "sweep.status": "running", "dvc.baseline_rev": head.stdout.strip() or "unknown"}
    run = client.create_run(experiment, run_name=name, tags=tags)
    space = {key: v if isinstance(v, list) else v.model_dump() for key, v in spec.space.items()}
    for key, value in {
        "sweep.space": json.dumps(space, sort_keys=True),
        "sweep.mode": spec.mode,
        "sweep.budget": spec.budget(),
        "sweep.seed": spec.seed if spec.mode == "tpe" else "none",
        "sweep.jobs": jobs,
        "sweep.metric": VALIDATION_METRIC,
    }.items():
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def end_parent(root: Path, parent: str, status: str, files: list[Path], metrics: dict[str, float]) -> None:
    """Log the result files and counts, and close the parent as FINISHED or KILLED."""
    client = _client(root)
    for path in files:
        client.log_artifact(parent, str(path), "sweep")
    for key, value in metrics.items():
        client.log_metric(parent, key, value)
    client.set_tag(parent, "sweep.status", status)
    final = {"finished": RunStatus.FINISHED, "interrupted": RunStatus.KILLED}.get(status, RunStatus.FAILED)
    client.set_terminated(parent, RunStatus.to_string(final))


def _trial_run(client: mlflow.MlflowClient, experiment: str, name: str) -> mlflow.entities.Run | None:
    """The newest finished run the train stage made for experiment `name`."""
    runs = client.search_runs(
        [experiment],
        f"tags.`dvc.exp_name` = '{name}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=5,
    )
    return next((run for run in runs if VALIDATION_METRIC in run.data.metrics), None)


def _run_file(root: Path) -> str:
    """The train stage's run.json (its MLflow run id), as dvc.yaml names it."""
    outs = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["train"]["outs"]
    return next(p for out in outs for p in ([out] if isinstance(out, str) else out) if p.endswith("run.json"))


def _committed_run(root: Path, client: mlflow.MlflowClient, name: str) -> mlflow.entities.Run | None:
    """The run whose model the experiment `name` committed (its run.json). When DVC restored
    train from its run cache (the same params ran before), that is an earlier run."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
        return done.stdout if done.returncode == 0 else ""

    refs = git("for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps").split()
    ref = next((r for r in refs if r.rsplit("/", 1)[-1] == name), None)
    text = git("show", f"{ref}:{_run_file(root)}") if ref else ""
    try:
        return client.get_run(json.loads(text)["run_id"]) if text else None
    except (MlflowException, KeyError, ValueError):
        return None


def collect_trial(root: Path, params: Params, parent: str, trial: Trial) -> bool:
    """Read a finished trial's validation score, version and training time; make its run a
    child of the sweep. False if its run is not in the store (it then counts as failed)."""
    client = _client(root)
    experiment = tracking.experiment_id(params.mlflow.experiment, root)
    run = _committed_run(root, client, trial.name) or _trial_run(client, experiment, trial.name)
    if run is None or VALIDATION_METRIC not in run.data.metrics:
        return False
    run_id, own = run.info.run_id, run.data.tags.get("dvc.exp_name")
    if own != trial.name:  # DVC reused an earlier run's outputs: point at it, do not adopt it
        trial.note = f"same params as {own or 'the workspace run'}: its run and model"
    if own == trial.name or "mlflow.parentRunId" not in run.data.tags:
        client.set_tag(run_id, "mlflow.parentRunId", parent)
        client.set_tag(run_id, SWEEP_TAG, parent_name(client, parent))
    trial.run_id, trial.val_miou = run_id, run.data.metrics[VALIDATION_METRIC]
    versions = client.search_model_versions(f"name='{params.mlflow.model_name}' and run_id='{run_id}'")
    trial.version = str(max(int(v.version) for v in versions)) if versions else None
    trial.train_s = sum(m.value for m in client.get_metric_history(run_id, "seconds")) or None
    return True


def parent_name(client: mlflow.MlflowClient, parent: str) -> str:
    return client.get_run(parent).data.tags.get(SWEEP_TAG, "")


def record_failure(root: Path, params: Params, parent: str, trial: Trial) -> None:
    """A FAILED child run holding the trial's params and error (its own run, if the train
    stage started one, is made a child too and marked FAILED)."""
    client = _client(root)
    experiment = tracking.experiment_id(params.mlflow.experiment, root)
    own = client.search_runs([experiment], f"tags.`dvc.exp_name` = '{trial.name}'", max_results=1)
    tags = {"mlflow.parentRunId": parent, SWEEP_TAG: parent_name(client, parent), "dvc.exp_name": trial.name}
    if own and own[0].info.status != "FINISHED":
        run_id = own[0].info.run_id
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
    else:
        run_id = client.create_run(experiment, run_name=trial.name, tags=tags).info.run_id
        for key, value in trial.params.items():
            client.log_param(run_id, key, value)
    client.set_tag(run_id, "sweep.error", (trial.error or "failed")[:5000])
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
    trial.run_id = run_id


def crown_candidate(root: Path, params: Params, parent: str, best: Trial) -> None:
    """Point @candidate at the best trial's version and name it on the parent run."""
    client = _client(root)
    client.set_registered_model_alias(params.mlflow.model_name, tracking.CANDIDATE, str(best.version))
    client.set_tag(parent, "sweep.best_trial", best.name)
    client.set_tag(parent, "sweep.best_version", str(best.version))
    client.log_metric(parent, f"best_{VALIDATION_METRIC}", float(best.val_miou))
