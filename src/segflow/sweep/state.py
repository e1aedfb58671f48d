"""A sweep's record on disk: its space, its MLflow parent run, and each trial's outcome.

``artifacts/sweeps/<name>/state.json`` (Git ignores artifacts/; no stage writes there, so
DVC never deletes it). It is rewritten atomically after every change, so a sweep stopped at
any moment (Ctrl-C, a closed terminal) resumes from it: finished trials, succeeded or failed,
are never run again; trials that were queued or running are looked up in DVC's queue and
queued again if they are gone. A search also keeps its Optuna study beside it (optuna.db).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from segflow.errors import ConfigError

__all__ = ["Trial", "SweepState", "PENDING", "SUCCESS", "FAILED", "DONE"]

PENDING, SUCCESS, FAILED = "pending", "success", "failed"
DONE = (SUCCESS, FAILED)


@dataclass
class Trial:
    """One trial: a DVC experiment named `name` with `params` set by -S."""

    name: str
    params: dict[str, Any]
    status: str = PENDING
    number: int | None = None  # the Optuna trial number (a search)
    val_miou: float | None = None  # best validation mIoU: what ranks the trials
    run_id: str | None = None
    version: str | None = None  # the registered model version
    error: str | None = None
    wall_s: float | None = None  # seen running -> seen finished (this process's polls)
    train_s: float | None = None  # the epochs' own time, from the run's history
    requeue: bool = False  # stopped by Ctrl-C: queue it again on resume
    note: str | None = None  # e.g. DVC reused an earlier run (the same params)


@dataclass
class SweepState:
    name: str
    spec: str  # SweepSpec.as_json(): a rerun with another space is refused
    parent_run_id: str | None = None
    trials: list[Trial] = field(default_factory=list)

    @staticmethod
    def load(path: Path, name: str, spec: str) -> SweepState:
        if not path.is_file():
            return SweepState(name, spec)
        raw = json.loads(path.read_text())
        if raw["spec"] != spec:
            raise ConfigError(
                f"sweep {name!r} exists ({path}) with another space or budget: {raw['spec']}; "
                "rerun it with the same flags to resume, or give the new one another name"
            )
        return SweepState(name, spec, raw.get("parent_run_id"), [Trial(**t) for t in raw["trials"]])

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(asdict(self), indent=1))
        os.replace(staging, path)

    def trial(self, name: str) -> Trial | None:
        return next((t for t in self.trials if t.name == name), None)

    def open_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.status not in DONE]
