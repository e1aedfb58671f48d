"""One sweep, start to end: queue trials, watch DVC's queue, collect results, resume, stop.

A grid queues every point at once and lets ``-j`` workers take them. A search keeps ``jobs``
trials in flight: it asks Optuna's TPE sampler for a point (ask/tell; ``constant_liar`` keeps
parallel asks apart), queues it, and tells the validation mIoU back when the trial ends; its
study lives in ``optuna.db`` beside the state, so a resumed search continues the same study.

With ``--storage URL`` (an Optuna RDB URL, e.g. the team's PostgreSQL) the study is shared:
the same command on several machines runs one search. Trials are named by the study's trial
numbers (unique across machines), the budget counts every machine's trials, and a process
that finishes points @candidate at the study's best so far only if it ran that trial
(`study_best`): the last one to finish leaves @candidate on the study's best. Each process
seeds its sampler from --seed, its host and its pid (one seed everywhere would ask the same
points); which process asks what depends on timing, so a shared search is not replayable.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segflow.config import Params
from segflow.errors import SegflowError
from segflow.sweep import queue, runs
from segflow.sweep.space import SweepSpec, grid_points, suggest
from segflow.sweep.state import FAILED, PENDING, SUCCESS, SweepState, Trial

__all__ = ["OVER_BUDGET", "SweepRun", "run_sweep"]

log = logging.getLogger(__name__)

#: A queued trial may be briefly absent from `dvc queue status` (between the queue and a
#: worker); one absent this long was removed by hand and is queued again.
GRACE_S = 120.0
#: A trial DVC lists as Running with no live process this long, while fewer workers run a
#: task than DVC lists as Running, lost its worker (the OOM killer, or a worker that shut
#: down for want of work just as it took the trial; DVC then lists it as Running for ever):
#: it is released and queued again. A live worker still setting the trial up or collecting
#: its results counts as running one, however long that takes.
ORPHAN_S = 30.0


@dataclass
class SweepRun:
    root: Path
    params: Params
    name: str
    spec: SweepSpec
    jobs: int
    folder: Path  # artifacts/sweeps/<name>
    poll_s: float = 5.0
    storage: str | None = None  # a shared Optuna storage URL (None: optuna.db in `folder`)


#: The user attribute of a study's trial asked past the budget by a race between processes
#: sharing the study (`_Search.ask`): told failed, never run.
OVER_BUDGET = "segflow.over_budget"


class _Search:
    """Optuna's side of a search: ask a point, tell a result."""

    def __init__(self, run: SweepRun) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna = optuna
        self.study = load_study(run)
        self.spec = run.spec

    def asked(self) -> int:
        """Trials asked so far, by every process sharing the study."""
        return len(self.study.get_trials(deepcopy=False))

    def ask(self) -> tuple[int, dict[str, Any]] | None:
        """A new trial's number and point, or None when the study already holds the budget's
        trials: another process sharing it asked the last one after `asked()` was read. That
        trial is told failed and marked (user attr OVER_BUDGET), never run."""
        trial = self.study.ask()
        if trial.number >= self.spec.budget():
            trial.set_user_attr(OVER_BUDGET, True)
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            return None
        return trial.number, suggest(trial, self.spec)

    def tell(self, trial: Trial) -> None:
        if trial.number is None:
            return
        state = self.optuna.trial.TrialState
        if trial.status == SUCCESS:
            self.study.tell(trial.number, trial.val_miou, skip_if_finished=True)
        else:
            self.study.tell(trial.number, state=state.FAIL, skip_if_finished=True)


def load_study(run: SweepRun) -> Any:  # noqa: ANN401 (optuna.Study, imported lazily)
    """The search's Optuna study (created on first use) in its storage."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = run.storage or f"sqlite:///{(run.folder / 'optuna.db').resolve()}"
    seed = run.spec.seed
    if run.storage:  # each process its own draws: the same seed everywhere asks the same points
        seed = zlib.crc32(f"{seed}:{socket.gethostname()}:{os.getpid()}".encode())
    sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    error: Exception | None = None
    for attempt in range(3):  # machines creating the same tables at once: try again, then give up
        try:
            return optuna.create_study(
                study_name=run.name, storage=storage, sampler=sampler, direction="maximize", load_if_exists=True
            )
        except SQLAlchemyError as exc:  # unreachable, refused, a race on the tables
            error = exc
            time.sleep(1 + attempt)
        except (ValueError, ImportError) as exc:  # a bad URL, no driver
            error = exc
            break
    message = f"sweep {run.name}: cannot open the Optuna storage {redact(storage)} ({error}); check --storage"
    raise SegflowError(message)


def redact(url: str) -> str:
    """`url` without its password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:  # not a database URL
        return url.split("@")[-1]


def study_best(run: SweepRun) -> int | None:
    """The Optuna number of the study's best finished trial, by any process; None if none."""
    study = load_study(run)
    complete = [t for t in study.get_trials(deepcopy=False) if t.value is not None and t.state.name == "COMPLETE"]
    return max(complete, key=lambda t: t.value).number if complete else None


def _finish_trial(run: SweepRun, state: SweepState, parent: str, trial: Trial, ok: bool, started: dict) -> None:
    if trial.name in started:
        trial.wall_s = round(time.monotonic() - started.pop(trial.name), 1)
    if ok and runs.collect_trial(run.root, run.params, parent, trial):
        trial.status = SUCCESS
        log.info("%s: validation mIoU %.4f (version %s)", trial.name, trial.val_miou, trial.version)
    else:
        trial.status = FAILED
        if ok:
            trial.error = "finished, but its MLflow run (tag dvc.exp_name) has no best_val_miou"
        else:
            trial.error = queue.trial_error(run.root, trial.name)
        runs.record_failure(run.root, run.params, parent, trial)
        log.warning("%s failed: %s", trial.name, trial.error)


def run_sweep(run: SweepRun, state: SweepState, parent: str) -> str:
    """Run the sweep's open trials to the end; "finished", or "interrupted" on Ctrl-C."""
    search = _Search(run) if run.spec.mode == "tpe" else None
    if search is None and not state.trials:
        for k, point in enumerate(grid_points(run.spec), 1):
            state.trials.append(Trial(f"{run.name}-{k}", point))
    loop = _Loop(run, state, parent, search)
    in_dvc = queue.queue_status(run.root) or queue.QueueView({}, None)
    for trial in state.open_trials():  # resumed: still in DVC's queue, or queued again
        if not trial.requeue and in_dvc.status(trial.name) in ("Queued", "Running", "Success"):
            loop.in_flight.append(trial)
    try:
        while True:
            if loop.queue_open():
                state.save(run.folder / "state.json")
                queue.start_workers(run.root, run.jobs)
            if not loop.in_flight:
                return "finished"
            time.sleep(run.poll_s)
            status = queue.queue_status(run.root)
            if status is None:
                log.warning("`dvc queue status` did not answer in time; asking again")
                continue
            loop.follow(status)
            if loop.in_flight and not any(status.status(t.name) == "Running" for t in loop.in_flight):
                queue.start_workers(run.root, run.jobs)  # idle workers exit after 10 s
    except KeyboardInterrupt:
        loop.stop()
        return "interrupted"


@dataclass
class _Loop:
    """The trials in flight, as `run_sweep` follows them through DVC's queue."""

    run: SweepRun
    state: SweepState
    parent: str
    search: _Search | None
    in_flight: list[Trial] = field(default_factory=list)
    started: dict[str, float] = field(default_factory=dict)  # seen running since
    seen: dict[str, str | None] = field(default_factory=dict)  # the last status logged
    missing: dict[str, float] = field(default_factory=dict)  # since when not in `dvc queue status`
    orphaned: dict[str, float] = field(default_factory=dict)  # since when Running with no process

    def _queue(self, trial: Trial) -> None:
        queue.queue_trial(self.run.root, trial.name, trial.params)
        self.missing[trial.name] = time.monotonic()
        self.in_flight.append(trial)

    def queue_open(self) -> bool:
        """Queue the open trials not in flight (a search: up to `jobs`, asking for new points
        within the budget); whether any was queued."""
        run, search, queued = self.run, self.search, False
        for trial in self.state.open_trials():
            if trial not in self.in_flight and (search is None or len(self.in_flight) < run.jobs):
                if trial.requeue:
                    queue.forget(run.root, trial.name)
                self._queue(trial)
                trial.requeue, queued = False, True
        while search is not None and len(self.in_flight) < run.jobs and search.asked() < run.spec.budget():
            if (asked := search.ask()) is None:
                break
            number, point = asked
            trial = Trial(f"{run.name}-{number + 1}", point, number=number)
            self.state.trials.append(trial)
            self._queue(trial)
            queued = True
        return queued

    def follow(self, status: queue.QueueView) -> None:
        """Log each trial's new status; collect the finished; queue again the ones gone or
        orphaned."""
        for trial in list(self.in_flight):
            now = status.status(trial.name)
            if now is not None:
                self.missing.pop(trial.name, None)
            if now != self.seen.get(trial.name):
                log.info("%s: %s", trial.name, (now or "gone from the queue").lower())
                self.seen[trial.name] = now
            if now == "Running":
                self.started.setdefault(trial.name, time.monotonic())
                self._release_if_orphaned(trial, status)
            elif now in ("Success", "Failed"):
                _finish_trial(self.run, self.state, self.parent, trial, now == "Success", self.started)
                self.in_flight.remove(trial)
                if self.search is not None:
                    self.search.tell(trial)
                self.state.save(self.run.folder / "state.json")
            elif now is None and time.monotonic() - self.missing.setdefault(trial.name, time.monotonic()) > GRACE_S:
                self.in_flight.remove(trial)  # gone from the queue (removed by hand): queue it again
                trial.requeue = True

    def _release_if_orphaned(self, trial: Trial, status: queue.QueueView) -> None:
        """Queue `trial` again if DVC has listed it as Running with no live process, and
        more tasks as Running than workers running one, for ORPHAN_S seconds."""
        if not status.unattended() or queue.process_alive(self.run.root, status.tasks[trial.name].rev):
            self.orphaned.pop(trial.name, None)
            return
        if time.monotonic() - self.orphaned.setdefault(trial.name, time.monotonic()) <= ORPHAN_S:
            return
        log.warning(
            "%s: DVC lists it as running but no process has run it for %.0f s (its queue worker "
            "died); queueing it again",
            trial.name,
            ORPHAN_S,
        )
        queue.release(self.run.root, trial.name)
        self.in_flight.remove(trial)
        for since in (self.orphaned, self.started, self.seen):
            since.pop(trial.name, None)
        trial.requeue = True

    def stop(self) -> None:
        """Ctrl-C: stop this sweep's trials in DVC's queue; they are queued again on resume."""
        log.warning("interrupted: stopping this sweep's trials (finished ones are kept)")
        root = self.run.root
        try:
            status = queue.queue_status(root)
        except SegflowError:
            status = None
        if status is None:
            running = [t.name for t in self.in_flight if t.name in self.started]
        else:
            running = [t.name for t in self.in_flight if status.status(t.name) == "Running"]
        queue.stop_trials(root, running, [t.name for t in self.in_flight if t.name not in running])
        for trial in self.in_flight:
            trial.status, trial.requeue = PENDING, True
        self.state.save(self.run.folder / "state.json")
