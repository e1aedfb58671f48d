"""DVC's experiment queue, through its command line (the interface DVC keeps stable), but for
the poll of its status, asked through DVC's Python API (``queue_status``: a `dvc` process per
poll cost 50x its CPU; tests/sweep/test_sweep.py checks both give one view).

A trial is ``dvc exp run --queue -S key=value ... -n <name>``; ``dvc queue start -j N``
starts the workers that are missing (DVC's workers exit after 10 s without work, so calling
it again after queueing more is how a search keeps them busy). Two trainings on two cores,
each spinning OpenMP's default thread count, slow each other down tens of times: workers get
``OMP_NUM_THREADS = max(1, cores // N)``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from segflow.errors import SegflowError
from segflow.sweep.space import cli_value

__all__ = [
    "Task",
    "QueueView",
    "queue_trial",
    "start_workers",
    "queue_status",
    "parse_status",
    "queue_view",
    "process_alive",
    "trial_error",
    "stop_trials",
    "release",
    "forget",
    "worker_env",
]

#: Seconds a dvc command may take before the sweep gives up on it (it never trains).
DVC_TIMEOUT = 300
#: `dvc queue status` asks the workers too; one that does not answer is asked again next poll.
STATUS_TIMEOUT = 60
#: DVC reads its queue's JSON files while its workers write them: a half-written one fails to
#: parse (seen on a loaded 2-core VM). Asked again this many times, a second apart, before failing.
STATUS_TRIES = 3
_STATUSES = ("Queued", "Running", "Success", "Failed")


class Task(NamedTuple):
    """One row of `dvc queue status`."""

    status: str  # Queued | Running | Success | Failed
    rev: str  # the first 7 hex digits of the experiment's stash revision


class QueueView(NamedTuple):
    """`dvc queue status`: each experiment's task by name, and how many workers run a task
    (its "Worker status: N active" line; None if it printed none)."""

    tasks: dict[str, Task]
    busy_workers: int | None

    def status(self, name: str) -> str | None:
        task = self.tasks.get(name)
        return task.status if task else None

    def unattended(self) -> bool:
        """More tasks listed as Running than workers running one: some worker died holding
        its task (when the count is unknown, assume so and let the process check decide)."""
        running = sum(task.status == "Running" for task in self.tasks.values())
        return self.busy_workers is None or running > self.busy_workers


def _dvc(
    root: Path, *args: str, env: dict[str, str] | None = None, check: bool = True, timeout: float = DVC_TIMEOUT
) -> str:
    try:
        done = subprocess.run(
            ["dvc", *args], cwd=root, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise SegflowError("`dvc` is not on PATH: activate the environment segflow is installed in") from None
    if check and done.returncode != 0:
        raise SegflowError(f"`dvc {' '.join(args)}` failed in {root}: {(done.stderr or done.stdout).strip()[-800:]}")
    return done.stdout + done.stderr


def worker_env(jobs: int) -> dict[str, str]:
    """The environment `dvc queue start -j jobs` passes to its workers (and their stages)."""
    cores = os.cpu_count() or 1
    return {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // jobs))}


def queue_trial(root: Path, name: str, params: dict[str, Any]) -> None:
    """Queue one trial as a DVC experiment of the workspace's commit with `params` set."""
    assignments = [arg for key, value in params.items() for arg in ("-S", f"{key}={cli_value(value)}")]
    _dvc(root, "exp", "run", "--queue", *assignments, "-n", name)


def start_workers(root: Path, jobs: int) -> None:
    """Start the missing workers. Their output goes to a file, not a pipe: a worker inherits
    it, and a pipe would keep this call waiting until the worker exits."""
    with tempfile.TemporaryFile("w+") as output:
        done = subprocess.run(
            ["dvc", "queue", "start", "-j", str(jobs)],
            cwd=root,
            env=worker_env(jobs),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=DVC_TIMEOUT,
        )
        if done.returncode != 0:
            output.seek(0)
            raise SegflowError(f"`dvc queue start -j {jobs}` failed in {root}: {output.read().strip()[-800:]}")


def queue_status(root: Path) -> QueueView | None:
    """What `dvc queue status` prints, asked through DVC's Python API in this process: a `dvc`
    process per poll cost 0.65 s of CPU (its imports; a sweep polls every `--poll` seconds
    beside the trials it waits for), this about 0.015 s. None when it does not answer within
    STATUS_TIMEOUT (it asks the workers, which may be shutting down)."""
    answer: list[QueueView | Exception] = []

    def ask() -> None:
        for attempt in range(1, STATUS_TRIES + 1):
            try:
                answer.append(_ask_dvc(root))
                return
            except ValueError as error:  # json.JSONDecodeError: a file caught mid-write
                if attempt == STATUS_TRIES:
                    answer.append(error)
                    return
                time.sleep(1)
            except Exception as error:  # noqa: BLE001 - raised again in the caller's thread
                answer.append(error)
                return

    asking = threading.Thread(target=ask, name="dvc-queue-status", daemon=True)
    asking.start()
    asking.join(STATUS_TIMEOUT)
    if not answer:
        return None
    if isinstance(answer[0], Exception):
        raise SegflowError(f"`dvc queue status` failed in {root}: {answer[0]}")
    return answer[0]


def _ask_dvc(root: Path) -> QueueView:
    from dvc.repo import Repo  # the first poll imports DVC (0.3 s), the rest reuse it

    with Repo(str(root)) as repo:
        celery = repo.experiments.celery_queue
        rows = [(row["rev"][:7], row.get("name") or "", row["status"]) for row in celery.status()]
        workers = celery.worker_status()  # as the command counts "N active": workers holding a task
    return queue_view(rows, sum(1 for tasks in workers.values() if tasks))


def queue_view(rows: Iterable[tuple[str, str, str]], busy_workers: int | None) -> QueueView:
    """The view of (rev, name, status) rows. A name queued again after a stop has an old
    Failed row and a new one: the live one wins."""
    found: dict[str, Task] = {}
    for rev, name, status in rows:
        if status in _STATUSES and (name not in found or found[name].status == "Failed"):
            found[name] = Task(status, rev)
    return QueueView(found, busy_workers)


def parse_status(text: str) -> QueueView:
    """The output of `dvc queue status`, read (the view `queue_status` gives, from the text)."""
    rows = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and re.fullmatch(r"[0-9a-f]{7}", words[0]) and words[-1] in _STATUSES:
            rows.append((words[0], words[1], words[-1]))
    busy = re.search(r"Worker status: (\d+) active", text)
    return queue_view(rows, int(busy[1]) if busy else None)


def process_alive(root: Path, rev: str) -> bool:
    """Whether the process DVC started for the task `rev` (`dvc exp exec-run`, recorded by
    DVC's process manager under .dvc/tmp/exps/run/<stash rev>/) is alive. DVC lists a task as
    Running from the moment a worker takes its message until the worker stores its result, so
    a task whose worker died (killed, or shut down for want of work just as it took the task)
    stays Running with no process: only this tells it apart."""
    for info in (root / ".dvc" / "tmp" / "exps" / "run").glob(f"{rev}*/*.json"):
        try:
            recorded = json.loads(info.read_text())
            if recorded.get("returncode") is not None:
                return False
            os.kill(int(recorded["pid"]), 0)
        except ProcessLookupError:
            return False
        except (OSError, ValueError, KeyError, TypeError):  # being written, or not ours to signal
            return True
        return True
    return False


def trial_error(root: Path, name: str) -> str:
    """The reason a trial failed, from its queue log: the stage's own error (a segflow stage
    logs one line naming the key and the fix), else DVC's last error line."""
    log = _dvc(root, "queue", "logs", name, check=False)
    lines = log.splitlines()
    for i, line in enumerate(lines):
        # rich's log: "[12:00:00] ERROR    message", continued on indented lines
        if match := re.match(r"^\[[\d:]+\]\s+ERROR\s+(.*)$", line) or re.match(r"^\s*ERROR\s{2,}(.*)$", line):
            parts = [match[1]]
            for more in lines[i + 1 :]:
                if not more.startswith(" ") or not more.strip() or re.match(r"^\s*\[[\d:]+\]", more):
                    break
                parts.append(more.strip())
            return " ".join(" ".join(parts).split())
    dvc_errors = [line.strip() for line in lines if line.strip().startswith("ERROR:")]
    tracebacks = [line.strip() for line in lines if re.match(r"^\w+(Error|Exception)\b", line.strip())]
    return (tracebacks or dvc_errors or ["failed (see `dvc queue logs " + name + "`)"])[-1][:500]


def stop_trials(root: Path, running: list[str], queued: list[str]) -> None:
    """Ctrl-C: kill the sweep's running trials and take its queued ones off the queue
    (they are queued again on resume). Other experiments in the queue are left alone."""
    if running:  # as Ctrl-C: the train stage ends its MLflow run as KILLED
        _dvc(root, "queue", "kill", *running, check=False)
    if queued:
        _dvc(root, "queue", "remove", *queued, check=False)


def release(root: Path, name: str) -> None:
    """A trial DVC lists as Running that no process runs: `dvc queue kill` finds no process
    and, as no worker holds the task either, marks it Failed, so it can be queued again."""
    _dvc(root, "queue", "kill", name, check=False)


def forget(root: Path, name: str) -> None:
    """Remove a stopped trial's old task (killed: Failed) before it is queued again."""
    _dvc(root, "queue", "remove", name, check=False)
