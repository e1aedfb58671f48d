"""The `segflow` command: what acts on the registry and results, outside DVC stages."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich import print as rprint
from rich.table import Table

__all__ = ["main"]


def _summary(args: argparse.Namespace) -> int:
    """Print the test metrics, the registered model version, and how to look at runs."""
    metrics_path = args.artifacts / "evaluate" / "metrics.json"
    run_path = args.artifacts / "train" / "run.json"
    missing = [str(p) for p in (metrics_path, run_path) if not p.is_file()]
    if missing:
        rprint(f"[red]no results yet ({', '.join(missing)} missing): run `dvc repro` first[/]")
        return 1
    metrics, run = json.loads(metrics_path.read_text()), json.loads(run_path.read_text())
    test = metrics["test"]
    table = Table(title=f"test split, {test['images']} images")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("miou", "mdice", "pixel_accuracy"):
        table.add_row(key, f"{test[key]:.4f}")
    table.add_row("majority-class mIoU (baseline)", f"{metrics['majority_class_miou']:.4f}")
    for name, value in test["iou"].items():
        table.add_row(f"IoU {name}", "n/a" if value is None else f"{value:.4f}")
    rprint(table)
    rprint(
        f"registered model [bold]{run['model_name']}[/] version [bold]{run['model_version']}[/] "
        f"(alias candidate), MLflow run {run['run_id']}"
    )
    rprint("browse runs and models: [bold]mlflow ui[/] (from the repository root), then open http://127.0.0.1:5000")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="segflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="print the latest pipeline results")
    summary.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    summary.set_defaults(func=_summary)
    args = parser.parse_args(argv)
    sys.exit(args.func(args))
