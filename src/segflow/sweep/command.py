"""`segflow sweep NAME -S key=values ... [--trials N --seed S] [-j N]`: the command line.

Trials are DVC experiments of the workspace (commit first, so that each trial is the commit
plus its ``-S`` values). The results go to
``artifacts/sweeps/NAME/`` (state.json, trials.csv, trials.png; a search's optuna.db) and to
the parent run; the best trial on validation becomes ``@candidate`` and `segflow promote`
judges it on the test split (``--no-promote``: only print the command).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from pathlib import Path

from segflow.errors import ConfigError

__all__ = ["add_sweep_command", "sweep"]

log = logging.getLogger(__name__)


def add_sweep_command(commands: argparse._SubParsersAction) -> None:
    """Add ``sweep`` to the `segflow` command's sub-commands."""
    parser = commands.add_parser(
        "sweep",
        help="a grid or Optuna search over params as queued DVC experiments; the best becomes @candidate",
        description="Queue one DVC experiment per trial (named NAME-1, NAME-2, ...), run them with -j DVC queue "
        "workers, group their MLflow runs under one parent run, rank them on validation mIoU, point "
        "@candidate at the best and run `segflow promote`. Rerun the same command to resume: finished trials "
        "are skipped. Ctrl-C stops the sweep's trials cleanly.",
    )
    parser.add_argument("name", help="the sweep's name: its trials are NAME-1, NAME-2, ... (letters, digits, - _ .)")
    parser.add_argument(
        "-S",
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="KEY=VALUES",
        help="a params key and its values: train.lr=0.001,0.003 (grid or choices) or train.lr=1e-4..1e-2:log "
        "(a range, with --trials)",
    )
    parser.add_argument("--file", type=Path, help="a sweep file (space:, trials:, seed:, jobs:) instead of -S")
    parser.add_argument("--trials", type=int, help="an Optuna TPE search of this many trials (default: the grid)")
    parser.add_argument("--seed", type=int, help="the search's sampler seed (default 0)")
    parser.add_argument("-j", "--jobs", type=int, help="DVC queue workers (default 1)")
    parser.add_argument(
        "--storage",
        help="share the search's Optuna study through this database URL (e.g. the team's "
        "postgresql://user@host/optuna): the same command on several machines runs one search",
    )
    parser.add_argument("--no-promote", action="store_true", help="set @candidate but only print the promote command")
    parser.add_argument("--poll", type=float, default=5.0, help="seconds between queue checks (default %(default)s)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default %(default)s)")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="default %(default)s")
    parser.set_defaults(func=sweep)


def _spec(args: argparse.Namespace):  # noqa: ANN202 (SweepSpec, jobs)
    from segflow.sweep.space import build_spec, load_spec_file, parse_assignment

    raw = load_spec_file(args.file) if args.file else {}
    jobs = args.jobs or raw.pop("jobs", 1)
    space = dict(raw.get("space") or {})
    space.update(parse_assignment(text) for text in args.assignments)
    raw["space"] = space
    for key in ("trials", "seed"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    if not space:
        raise ConfigError("segflow sweep: nothing to sweep: give -S KEY=VALUES (e.g. -S train.lr=0.001,0.003)")
    if not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"segflow sweep: jobs must be a whole number >= 1 (got {jobs!r})")
    return build_spec(raw, str(args.file) if args.file else "segflow sweep -S"), jobs


def sweep(args: argparse.Namespace) -> int:
    """Run (or resume) the sweep, print its table, crown the best, run the gate."""
    try:
        return _sweep(args)
    except KeyboardInterrupt:  # outside the trials' loop (which stops them itself): nothing runs
        print(f"interrupted: rerun the same command to resume sweep {args.name}", file=sys.stderr)
        return 130


def _log_progress() -> None:
    """The trials' progress on stderr, timed; libraries stay quiet."""
    progress = logging.getLogger("segflow.sweep")
    if not progress.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)


def _best(run, state, status: str):  # noqa: ANN001, ANN202 (SweepRun, SweepState -> Trial | None, str | None)
    """The trial to crown: the best this process ran on validation; None, with the shared
    study's best trial's name, when another process sharing --storage ran a better one."""
    from segflow.sweep import report
    from segflow.sweep.driver import study_best
    from segflow.sweep.state import SUCCESS

    ranked = report.ranked(state)
    best = ranked[0] if ranked and ranked[0].status == SUCCESS and ranked[0].version else None
    if best is not None and run.storage and status == "finished":
        overall = study_best(run)
        if overall is not None and overall != best.number:
            return None, f"{run.name}-{overall + 1}"
    return best, None


def _conclude(args: argparse.Namespace, status: str, best, elsewhere: str | None) -> int:  # noqa: ANN001
    """Say how the sweep ended and hand its best trial to the gate (`segflow promote`, in its
    own process) unless told not to; returns the exit status."""
    from rich import print as rprint

    if status == "interrupted":
        rprint(f"[yellow]interrupted: rerun the same command to resume sweep {args.name}[/]")
        return 130
    if elsewhere is not None:
        rprint(f"the study's best is {elsewhere}, run by another process sharing --storage: it points @candidate there")
        return 0
    if best is None:
        rprint("[red]no trial succeeded: nothing to promote[/]")
        return 1
    rprint(f"best on validation: [bold]{best.name}[/] (mIoU {best.val_miou:.4f}), version {best.version} is @candidate")
    command = ["promote", "--version", str(best.version), "--params", str(args.params), "--artifacts",
               str(args.artifacts)]  # fmt: skip
    if args.no_promote:
        rprint(f"judge it on the test split: segflow {' '.join(command)}")
        return 0
    rprint(f"segflow {' '.join(command)}")
    # The gate as a user runs it, in its own process: its table and verdict print as they are.
    gate = subprocess.run([sys.executable, "-c", "from segflow.cli import main; main()", *command], timeout=3600)
    rprint("@champion moved" if gate.returncode == 0 else "[yellow]the gate kept @champion (see above)[/]")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from rich import print as rprint

    from segflow.config import load_params
    from segflow.sweep import report, runs
    from segflow.sweep.driver import SweepRun, run_sweep
    from segflow.sweep.space import NAME_PATTERN
    from segflow.sweep.state import SweepState

    _log_progress()
    if not NAME_PATTERN.match(args.name):
        raise ConfigError(f"sweep name {args.name!r}: use letters, digits, '-', '_' or '.' (it names DVC experiments)")
    spec, jobs = _spec(args)
    if args.storage and spec.mode != "tpe":
        raise ConfigError(
            "segflow sweep --storage shares an Optuna search (--trials N); a grid has none: "
            "run it on one machine with -j N"
        )
    params = load_params(args.params)
    root = Path.cwd()
    folder = args.artifacts / "sweeps" / args.name
    state = SweepState.load(folder / "state.json", args.name, spec.as_json())
    done = [t.name for t in state.trials if t not in state.open_trials()]
    if done:
        rprint(f"resuming sweep [bold]{args.name}[/]: {len(done)} trial(s) done, skipped: {', '.join(done)}")
    state.parent_run_id = runs.start_parent(root, params, args.name, spec, jobs, state.parent_run_id)
    state.save(folder / "state.json")
    rprint(f"sweep [bold]{args.name}[/]: {spec.mode}, {spec.budget()} trials, {jobs} worker(s); parent run "
           f"{state.parent_run_id}")  # fmt: skip
    run = SweepRun(root, params, args.name, spec, jobs, folder, args.poll, args.storage)
    status = run_sweep(run, state, state.parent_run_id)
    best, elsewhere = _best(run, state, status)
    if status == "finished" and best is not None:
        runs.crown_candidate(root, params, state.parent_run_id, best)
    files = [report.write_csv(state, folder / "trials.csv")]
    if state.trials:
        files.append(report.write_plot(state, folder / "trials.png"))
    counts = {f"trials_{s}": float(sum(t.status == s for t in state.trials)) for s in ("success", "failed")}
    runs.end_parent(root, state.parent_run_id, status, files, counts)
    rprint(report.table(state, best if status == "finished" else None))
    rprint(f"written: {', '.join(str(f) for f in files)} (also artifacts of run {state.parent_run_id})")
    return _conclude(args, status, best, elsewhere)
