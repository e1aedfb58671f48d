"""MLflow set-up: where runs go, and the code and data versions they record.

By default runs and registered models go to a SQLite file at the repository root
(``mlflow.db``) with artifacts in ``mlartifacts/``; those are the places a bare
``mlflow ui`` started at the root reads. ``MLFLOW_TRACKING_URI`` points elsewhere
(e.g. a tracking server) instead.
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


def configure(root: Path) -> str:
    """Point MLflow at the tracking store; returns the tracking URI in use."""
    global _default_set
    from_user = os.environ.get("MLFLOW_TRACKING_URI")
    if from_user and from_user != _default_set:
        uri = from_user
    else:
        uri = _default_set = f"sqlite:///{(root / 'mlflow.db').resolve()}"
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
        location = (root / "mlartifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


def code_version(root: Path) -> dict[str, str]:
    """The git commit of `root` and whether the work tree had uncommitted changes."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


def data_version(root: Path) -> str:
    """The md5 DVC recorded for data/ in data.dvc ("unknown" without one)."""
    path = root / "data.dvc"
    if not path.is_file():
        return "unknown"
    outs = (yaml.safe_load(path.read_text()) or {}).get("outs") or [{}]
    return str(outs[0].get("md5", "unknown"))
