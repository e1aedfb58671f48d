"""MLflow set-up: where runs go, and the code and data versions they record.

By default runs and registered models go to a SQLite file at the repository root
(``mlflow.db``) with artifacts in ``mlartifacts/``; those are the places a bare
``mlflow ui`` started at the root reads. ``MLFLOW_TRACKING_URI`` points elsewhere
(e.g. a tracking server) instead.

DVC experiments: `dvc exp run --queue` and `--temp` run the stages in a copy of the
repository under ``.dvc/tmp/exps/``, deleted afterwards. DVC tells the stage the project's
own root (``DVC_ROOT``), the experiment's name (``DVC_EXP_NAME``) and its baseline commit
(``DVC_EXP_BASELINE_REV``): runs go to the project's store and carry those as tags, so
`mlflow ui`, `segflow models` and `dvc exp show` name the same experiments.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import mlflow
import yaml

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "project_root",
    "experiment_tags",
    "configure",
    "experiment_id",
    "code_version",
    "data_version",
]

#: Aliases used in the model registry; versions are never addressed as "latest".
CANDIDATE = "candidate"
CHAMPION = "champion"


#: The default URI this process last set; mlflow.set_tracking_uri copies it into the
#: environment, where it must not be mistaken for the user's own MLFLOW_TRACKING_URI.
_default_set: str | None = None


#: Paths a stage writes that Git tracks (small metrics, the lock): their changes are the
#: pipeline's own results, not a change of code or params, so they do not make a run dirty.
OUTPUT_PATHS = ("artifacts", "dvc.lock")


def project_root(root: Path) -> Path:
    """The project whose store runs go to: DVC's ``DVC_ROOT`` when a stage runs inside an
    experiment's temporary copy (queue, --temp), else `root`."""
    from_dvc = os.environ.get("DVC_ROOT")
    if from_dvc and Path(from_dvc).is_dir():
        return Path(from_dvc)
    return root


def experiment_tags() -> dict[str, str]:
    """The DVC experiment this process runs in (name, baseline commit); {} outside one."""
    tags = {}
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


def configure(root: Path) -> str:
    """Point MLflow at the tracking store; returns the tracking URI in use."""
    global _default_set
    from_user = os.environ.get("MLFLOW_TRACKING_URI")
    if from_user and from_user != _default_set:
        uri = from_user
    else:
        uri = _default_set = f"sqlite:///{(project_root(root) / 'mlflow.db').resolve()}"
    mlflow.set_tracking_uri(uri)
    # The registry follows the tracking URI unless MLFLOW_REGISTRY_URI says otherwise.
    # (mlflow.set_registry_uri would write that variable, pinning later calls to this store.)
    return uri


def experiment_id(name: str, root: Path) -> str:
    """Id of the experiment `name`, created on first use.

    With a local store its artifacts go to ``<root>/mlartifacts`` (an explicit location:
    MLflow's client default, ``./mlruns``, would make ``mlflow ui`` read the wrong store).
    A tracking server chooses its own artifact location.
    """
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    location = None
    if mlflow.get_tracking_uri().startswith("sqlite:"):
        location = (project_root(root) / "mlartifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def code_version(root: Path) -> dict[str, str]:
    """The git commit of the code and whether code or params differ from it.

    ``git_dirty`` ignores the pipeline's own tracked outputs (`OUTPUT_PATHS`), which a
    stage rewrites before training. In a DVC experiment the commit is the experiment's
    baseline, and dirty means the experiment changed code or params relative to it
    (``-S train.lr=...`` does); its name is in `experiment_tags`.
    """

    def git(*args: str) -> str | None:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    outside_outputs = ["--", ".", *(f":(exclude){path}" for path in OUTPUT_PATHS)]
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    if baseline:
        changed = git("diff", "--name-only", baseline, *outside_outputs)
        commit = baseline
    else:
        changed = git("status", "--porcelain", "--untracked-files=no", *outside_outputs)
        commit = git("rev-parse", "HEAD") or "unknown"
    dirty = "unknown" if changed is None else str(bool(changed)).lower()
    return {"git_commit": commit, "git_dirty": dirty}


def data_version(root: Path) -> str:
    """The hash DVC recorded for the fetch stage's source (``fetch.source``: the sample's
    `data`, a folder, an archive or a URL) in dvc.lock; "unknown" before fetch has run."""
    lock, params = root / "dvc.lock", root / "params.yaml"
    if not (lock.is_file() and params.is_file()):
        return "unknown"
    source = str(((yaml.safe_load(params.read_text()) or {}).get("fetch") or {}).get("source", "data"))
    deps = (((yaml.safe_load(lock.read_text()) or {}).get("stages") or {}).get("fetch") or {}).get("deps") or []
    for dep in deps:
        if str(dep.get("path", "")).rstrip("/") == source.rstrip("/"):
            return str(dep.get("md5") or dep.get("etag") or dep.get("checksum") or "unknown")
    return "unknown"
