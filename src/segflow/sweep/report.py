"""A sweep's result: every trial's params and validation score, best first.

Ranked on the validation split only (the checkpoint's best validation mIoU): the test split
judges the winner afterwards, in `segflow promote`, and never chooses it. Written as a rich
table (the terminal), trials.csv, and trials.png (validation mIoU against each swept key),
the last two logged to the parent run.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from rich.table import Table

from segflow.sweep.state import FAILED, SUCCESS, SweepState, Trial

__all__ = ["ranked", "table", "write_csv", "write_plot", "COLUMNS"]

COLUMNS = ("rank", "trial", "status", "val_miou", "version", "wall_s", "train_s", "run_id", "error", "note")


def ranked(state: SweepState) -> list[Trial]:
    """Succeeded trials by validation mIoU (ties: the earlier trial), then the others."""
    order = {t.name: i for i, t in enumerate(state.trials)}
    done = sorted((t for t in state.trials if t.status == SUCCESS), key=lambda t: (-(t.val_miou or 0.0), order[t.name]))
    return done + [t for t in state.trials if t.status != SUCCESS]


def _keys(state: SweepState) -> list[str]:
    keys: list[str] = []
    for trial in state.trials:
        keys.extend(k for k in trial.params if k not in keys)
    return keys


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(state: SweepState, best: Trial | None) -> Table:
    keys = _keys(state)
    out = Table(title=f"sweep {state.name}: {len(state.trials)} trials, ranked by validation mIoU")
    for column in ("#", "trial", *keys, "val mIoU", "version", "s", "status"):
        out.add_column(column, justify="right" if column in ("#", "val mIoU", "version", "s") else "left")
    for rank, trial in enumerate(ranked(state), 1):
        status = {SUCCESS: "[green]ok[/]", FAILED: f"[red]failed: {trial.error}[/]"}.get(trial.status, trial.status)
        if trial.note:
            status += f" ({trial.note})"
        if trial is best:
            status += " [bold]@candidate[/]"
        out.add_row(
            str(rank) if trial.status == SUCCESS else "",
            trial.name,
            *(_fmt(trial.params.get(k)) for k in keys),
            _fmt(trial.val_miou),
            trial.version or "",
            _fmt(round(trial.wall_s)) if trial.wall_s else "",
            status,
        )
    return out


def write_csv(state: SweepState, path: Path) -> Path:
    keys = _keys(state)
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([*COLUMNS[:3], *keys, *COLUMNS[3:]])
        for rank, t in enumerate(ranked(state), 1):
            row = [rank if t.status == SUCCESS else "", t.name, t.status, *(t.params.get(k) for k in keys)]
            writer.writerow(row + [t.val_miou, t.version, t.wall_s, t.train_s, t.run_id, t.error, t.note])
    return path


def write_plot(state: SweepState, path: Path) -> Path:
    """Validation mIoU against each swept key (one panel per key; failed trials as x at 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = _keys(state)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        values = [t.params.get(key) for t in state.trials]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        labels = sorted({str(v) for v in values})
        for trial in state.trials:
            value = trial.params.get(key)
            x = value if numeric else labels.index(str(value))
            if trial.status == SUCCESS and trial.val_miou is not None and not math.isnan(trial.val_miou):
                ax.scatter(x, trial.val_miou, color="tab:blue")
                ax.annotate(trial.name.rsplit("-", 1)[-1], (x, trial.val_miou), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
            else:
                ax.scatter(x, 0.0, marker="x", color="tab:red")
        if numeric and min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(labels)), labels, rotation=20, fontsize=7)
        ax.set_xlabel(key)
        ax.set_ylabel("validation mIoU")
    fig.suptitle(f"sweep {state.name} (x: failed)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
