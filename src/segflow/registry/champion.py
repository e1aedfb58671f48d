"""The `@champion` alias: who holds it, how it moves safely, and the evidence of each move.

Every champion change is evidence: tags on the model version (``promote.*`` or
``rollback.*``), a JSON record logged to the version's run (``promotions/``) and, when a
folder is given, written locally too. The order of champions is a registered-model tag
(``champion_history``, oldest first), which is what a rollback walks back through.

Concurrency: two promotions at once must not leave the aliases in a state neither asked
for. Three things see to it:

1. Only one alias is written per decision (`move_champion`), and MLflow stores an alias
   as one row keyed by (model, alias): a write moves it whole, so readers see the old
   champion or the new one, never none or two.
2. `champion_lock` is a file lock beside the tracking store (the SQLite file; for a
   server, a file in the temp folder named after the URI). A promote holds it from
   reading the champion to recording its decision, so promotes on one machine run one
   after the other, and the second compares against the first one's winner.
3. `move_champion` is a compare-and-set: right before writing, it re-reads the alias
   and refuses (`ChampionMoved`) if it is no longer the champion the comparison was
   made against (moved in the UI, or by a promote on another machine, which the file
   lock cannot see). Between that re-read and the write there is a window of one
   request; MLflow has no conditional alias update to close it. If two machines both
   slip through it, the champion is still one of the two requested versions (point 1);
   only the order in ``champion_history`` can miss one of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import mlflow
from filelock import FileLock, Timeout
from mlflow.exceptions import MlflowException

from segflow.errors import SegflowError
from segflow.registry import tracking

__all__ = [
    "HISTORY_TAG",
    "LOCK_TIMEOUT_S",
    "RegistryError",
    "ChampionMoved",
    "champion_lock",
    "champion_version",
    "champion_history",
    "set_champion_history",
    "move_champion",
    "record_decision",
]

log = logging.getLogger(__name__)

#: Registered-model tag holding the champions in order, oldest first (JSON list).
HISTORY_TAG = "champion_history"
#: Champions kept in that tag (a tag is a bounded string).
HISTORY_LENGTH = 50
#: How long a promote waits for another one on this machine (each scores two models on
#: the whole test split: minutes on a CPU for a large split).
LOCK_TIMEOUT_S = 1800


class Outcome(StrEnum):
    """What a promote or rollback decided (a str: it is written as is to records and tags)."""

    PROMOTED = "promoted"
    FORCED = "forced"
    REFUSED = "refused"
    FIRST_CHAMPION = "first champion"
    ALREADY_CHAMPION = "already champion"
    ROLLED_BACK = "rolled back"


class RegistryError(SegflowError):
    """The registry is not in a state the command can act on."""


class ChampionMoved(RegistryError):
    """`@champion` changed between the comparison and the move (see the module docstring)."""


def _lock_path(tracking_uri: str, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    if tracking_uri.startswith("sqlite:///"):
        database = Path(tracking_uri[len("sqlite:///") :].split("?")[0])
        return database.with_name(f"{database.name}.{safe}.promote.lock")
    if tracking_uri.startswith("file:") or "://" not in tracking_uri:
        folder = Path(tracking_uri.removeprefix("file://").removeprefix("file:"))
        return folder / f".{safe}.promote.lock"
    # A server or a remote database: only processes on this machine share the file;
    # the compare-and-set in move_champion covers the others.
    digest = hashlib.sha256(f"{tracking_uri} {name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"segflow-{safe}-{digest}.promote.lock"


@contextmanager
def champion_lock(name: str) -> Iterator[Path]:
    """Hold the lock that serialises champion changes of `name` on this machine."""
    path = _lock_path(mlflow.get_tracking_uri(), name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path, timeout=LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise RegistryError(
            f"another promote or rollback of {name!r} has held {path} for {LOCK_TIMEOUT_S}s: wait for "
            "it to finish (the operating system frees the lock when that process ends)"
        ) from None
    try:
        yield path
    finally:
        lock.release()


def champion_version(client: mlflow.MlflowClient, name: str) -> str | None:
    """The version `@champion` points at, None if there is none yet."""
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise RegistryError(
                f"no registered model {name!r} in {mlflow.get_tracking_uri()}: run `dvc repro` to train one"
            ) from None
        raise
    found = aliases.get(tracking.CHAMPION)
    return None if found is None else str(found)


def champion_history(client: mlflow.MlflowClient, name: str) -> list[str]:
    """Champions of `name` in order, oldest first (from the HISTORY_TAG tag)."""
    raw = client.get_registered_model(name).tags.get(HISTORY_TAG)
    try:
        history = json.loads(raw) if raw else []
    except json.JSONDecodeError:
        log.warning("ignoring the unreadable %s tag of %s: %r", HISTORY_TAG, name, raw)
        return []
    return [str(v) for v in history] if isinstance(history, list) else []


def set_champion_history(client: mlflow.MlflowClient, name: str, history: list[str]) -> None:
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_LENGTH:]))


def move_champion(client: mlflow.MlflowClient, name: str, version: str, expected: str | None) -> None:
    """Point `@champion` at `version` if it still points at `expected` (compare-and-set).

    Raises:
        ChampionMoved: the champion is no longer `expected`.
    """
    current = champion_version(client, name)
    if current != expected:
        raise ChampionMoved(
            f"@champion of {name!r} moved from {expected or 'none'} to {current or 'none'} while this "
            "command was comparing; nothing changed: run it again to compare against the new champion"
        )
    client.set_registered_model_alias(name, tracking.CHAMPION, version)


def _tag_metrics(metrics: dict) -> str:
    """Compact JSON of the compared scores for a tag (the full ones are in the record)."""
    keep = {}
    for role, values in metrics.items():
        if values:
            keep[role] = {key: values[key] for key in ("miou", "mdice") if key in values}
            keep[role]["iou"] = dict(zip(values.get("class_names", []), values.get("iou", [])))
    return json.dumps(keep, separators=(",", ":"))


def record_decision(
    client: mlflow.MlflowClient, name: str, version: str, record: dict, record_dir: Path | None
) -> dict:
    """Keep the evidence of one decision about `version`; returns the record as written.

    `record` holds action ("promote" or "rollback"), outcome, champion_before/after,
    reasons, rule, metrics, test_split, code (git_commit, git_dirty) and data_md5. It is
    stamped with the time, written as ``<record_dir>/<time>-<action>-v<version>.json``
    (if `record_dir`), logged to the version's run under ``promotions/``, and summed up
    in the version's ``<action>.*`` tags.
    """
    now = datetime.now(UTC)
    record = {**record, "at": now.isoformat(timespec="seconds")}
    filename = f"{now.strftime('%Y%m%dT%H%M%S.%fZ')}-{record['action']}-v{version}.json"
    text = json.dumps(record, indent=1)
    places = []
    if record_dir is not None:
        Path(record_dir).mkdir(parents=True, exist_ok=True)
        (Path(record_dir) / filename).write_text(text)
        places.append(str(Path(record_dir) / filename))
    run_id = client.get_model_version(name, version).run_id
    if run_id:
        client.log_text(run_id, text, f"promotions/{filename}")
        places.append(f"runs:/{run_id}/promotions/{filename}")
    prefix = record["action"]
    tags = {
        "outcome": record["outcome"],
        "at": record["at"],
        "previous_champion": str(record["champion_before"] or "none"),
        "champion_after": str(record["champion_after"] or "none"),
        "reasons": "; ".join(record.get("reasons") or []),
        "rule": (record.get("rule") or {}).get("text", "none"),
        "metrics": _tag_metrics(record.get("metrics") or {}),
        "split_sha256": str((record.get("test_split") or {}).get("sha256")),
        "data_md5": record["data_md5"],
        "git_commit": record["code"]["git_commit"],
        "record": " ".join(places),
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, f"{prefix}.{key}", value)
    return {**record, "files": places}
