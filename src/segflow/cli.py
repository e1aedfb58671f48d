"""The `segflow` command: what acts on the registry and results, outside DVC stages.

    segflow summary                               latest pipeline results
    segflow models                                registered versions, aliases, scores
    segflow promote [--version N | --run ID] [--force]
                                                  candidate vs @champion; move the alias
    segflow rollback                              @champion back to the previous one
    segflow export [--version N] [--exporter torchscript]
                                                  ONNX fp32 + int8 of @champion, verified, logged
    segflow serve [--model SPEC | --onnx FILE]    web page + JSON API on @champion
    segflow predict SOURCE --out DIR [--export via]
                                                  new photos -> masks, pre-annotations
    segflow backend [--label-studio URL]          the service + Label Studio's ML backend (/labelstudio)
    segflow pull-annotations --project N --out DIR
                                                  a Label Studio project's annotations -> DIR

The registry commands read params.yaml (model name, promotion rule) and the frozen test
split in artifacts/preprocess; decisions are written to artifacts/promotions/.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from rich import box
from rich import print as rprint
from rich.table import Table

from segflow.predict.command import add_predict_command
from segflow.serving.commands import add_labelstudio_commands, add_serve_command
from segflow.sweep.command import add_sweep_command

__all__ = ["main"]


def _aliases(name: str, version: str) -> list[str]:
    """The version's aliases as the registry has them now (the first version is also
    @champion; a later promote may have moved the aliases since)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from segflow.registry import tracking

    tracking.configure(Path.cwd())
    try:
        return sorted(mlflow.MlflowClient().get_model_version(name, str(version)).aliases)
    except MlflowException:
        return []


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
    table = Table(title=f"test split, {test['images']} images at their original size")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% interval (bootstrap over duplicate groups)", justify="right")
    for key in ("miou", "mdice", "pixel_accuracy"):
        interval = test.get(f"{key}_ci95") or []
        table.add_row(key, f"{test[key]:.3f}", " - ".join(f"{v:.3f}" for v in interval if v is not None))
    table.add_row("majority-class mIoU (baseline)", f"{metrics['majority_class_miou']:.3f}", "")
    for name, value in test["iou"].items():
        interval = [v for v in (test.get("iou_ci95") or {}).get(name) or [] if v is not None]
        table.add_row(
            f"IoU {name}", "n/a" if value is None else f"{value:.3f}", " - ".join(f"{v:.3f}" for v in interval)
        )
    rprint(table)
    aliases = ", ".join(f"@{alias}" for alias in _aliases(run["model_name"], run["model_version"]))
    rprint(
        f"registered model [bold]{run['model_name']}[/] version [bold]{run['model_version']}[/] "
        f"({aliases or 'no alias now'}), MLflow run {run['run_id']}"
    )
    rprint("browse runs and models: [bold]mlflow ui[/] (from the repository root), then open http://127.0.0.1:5000")
    return 0


def _num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _delta(new: float | None, old: float | None, digits: int, higher_is_better: bool) -> str:
    if new is None or old is None or math.isnan(new) or math.isnan(old):
        return ""
    diff = round(new - old, digits)
    good = diff > 0 if higher_is_better else diff < 0
    colour = "green" if good else "red" if diff else "white"
    return f"[{colour}]{diff:+.{digits}f}[/]"


def _scores_table(decision) -> Table:  # noqa: ANN001 (segflow.registry.promote.Decision, imported lazily)
    """Side by side: candidate and champion on the same test split."""
    cand, champ = decision.candidate, decision.champion
    table = Table(title=f"test split sha256 {decision.split_sha256[:12]}…, {cand.images} images")
    table.add_column("metric")
    table.add_column(f"candidate v{decision.version}", justify="right")
    table.add_column(
        f"champion v{decision.champion_before}" if decision.champion_before else "champion", justify="right"
    )
    table.add_column("change", justify="right")

    def row(label: str, new: float, old: float | None, digits: int = 4, higher_is_better: bool = True) -> None:
        table.add_row(label, _num(new, digits), _num(old, digits), _delta(new, old, digits, higher_is_better))

    row("mIoU", cand.miou, champ.miou if champ else None)
    for i, name in enumerate(cand.class_names):
        same = champ is not None and champ.class_names == cand.class_names
        row(f"  IoU {name}", cand.iou[i], champ.iou[i] if same else None)
    row("mean Dice", cand.mdice, champ.mdice if champ else None)
    row("pixel accuracy", cand.pixel_accuracy, champ.pixel_accuracy if champ else None)
    row("model size (MB)", cand.checkpoint_bytes / 1e6, champ.checkpoint_bytes / 1e6 if champ else None, 1, False)
    row("weights (millions)", cand.parameters / 1e6, champ.parameters / 1e6 if champ else None, 2, False)
    row("inference (ms / image)", cand.ms_per_image, champ.ms_per_image if champ else None, 1, False)
    return table


def _registry_context(args: argparse.Namespace):  # noqa: ANN202
    from segflow.config import load_params

    return load_params(args.params), args.artifacts / "preprocess", args.artifacts / "promotions"


def _promote(args: argparse.Namespace) -> int:
    """Compare the candidate with @champion on the frozen test split; move the alias if it wins."""
    from segflow.registry.champion import Outcome
    from segflow.registry.promote import promote, rule_text

    params, preprocess_dir, record_dir = _registry_context(args)
    decision = promote(
        params, preprocess_dir, record_dir, Path.cwd(), version=args.version, run_id=args.run, force=args.force
    )
    name = params.mlflow.model_name
    if decision.outcome is Outcome.ALREADY_CHAMPION:
        rprint(f"version {decision.version} of [bold]{name}[/] is already @champion: nothing to do")
        return 0
    rprint(_scores_table(decision))
    rprint(f"rule: {rule_text(params.promote)}")
    for reason in decision.reasons:
        rprint(f"  - {reason}")
    colour = {Outcome.REFUSED: "red", Outcome.FORCED: "yellow"}.get(decision.outcome, "green")
    version, before = decision.version, decision.champion_before
    verdict = {
        Outcome.FIRST_CHAMPION: f"version {version} is the first champion (no comparison)",
        Outcome.PROMOTED: f"version {version} promoted: @champion {before} -> {version}",
        Outcome.FORCED: f"version {version} promoted by --force over the rule: @champion {before} -> {version}",
        Outcome.REFUSED: f"version {version} refused: @champion stays {before} (--force overrides)",
    }[decision.outcome]
    rprint(f"[bold {colour}]{verdict}[/]")
    rprint(f"recorded: {', '.join(decision.record['files'])} and tags promote.* on version {decision.version}")
    return 1 if decision.outcome is Outcome.REFUSED else 0


def _rollback(args: argparse.Namespace) -> int:
    """Move @champion back to the previous champion."""
    from segflow.registry.promote import rollback

    params, _, record_dir = _registry_context(args)
    decision = rollback(params, record_dir, Path.cwd())
    rprint(
        f"[bold green]@champion {decision.champion_before} -> {decision.champion_after}[/] "
        f"({params.mlflow.model_name}, rolled back)"
    )
    rprint(f"recorded: {', '.join(decision.record['files'])} and tags rollback.* on version {decision.version}")
    return 0


def _models(args: argparse.Namespace) -> int:
    """List registered versions: aliases, test mIoU, data and code versions, creation time."""
    import mlflow

    from segflow.registry import tracking
    from segflow.registry.register import list_versions

    params, _, _ = _registry_context(args)
    uri = tracking.configure(Path.cwd())
    name = params.mlflow.model_name
    rows = list_versions(mlflow.MlflowClient(), name)
    if not rows:
        rprint(f"no versions of [bold]{name}[/] in {uri}: run `dvc repro` to train and register one")
        return 1
    table = Table(title=f"{name} in {uri}", box=box.SIMPLE_HEAD)
    for column, justify in (
        ("version", "right"),
        ("aliases", "left"),
        ("test mIoU", "right"),
        ("data md5", "left"),
        ("git commit", "left"),
        ("dvc exp", "left"),
        ("created (UTC)", "left"),
        ("last promote", "left"),
    ):
        table.add_column(column, justify=justify, no_wrap=column != "last promote")
    for row in rows:
        commit = (row["git_commit"] or "?")[:8] + ("*" if row["git_dirty"] else "")
        table.add_row(
            row["version"],
            ", ".join(f"@{a}" for a in row["aliases"]),
            _num(row["test_miou"]),
            (row["data_md5"] or "?")[:8],
            commit,
            row["experiment"] or "",
            row["created"].strftime("%Y-%m-%d %H:%M"),
            row["last_decision"] or "",
        )
    rprint(table)
    rprint("* = code or params differed from the commit when trained (a DVC experiment's -S, or edits).")
    rprint("Compare runs: [bold]mlflow ui[/] (Models tab: aliases and tags)")
    return 0


def _export(args: argparse.Namespace) -> int:
    """Export a registered version to ONNX (fp32 and int8), verify it, log it to its run."""
    from segflow.export.export import export_version
    from segflow.registry import tracking

    params, preprocess_dir, _ = _registry_context(args)
    tracking.configure(Path.cwd())
    report = export_version(params, preprocess_dir, args.version, args.exporter)
    table = Table(
        title=f"{params.mlflow.model_name} version {report['version']}: ONNX export, "
        f"{report['test_images']} test images"
    )
    for column in ("model", "size (MB)", "test mIoU", "pixels unlike PyTorch (worst image)"):
        table.add_column(column, justify="left" if column == "model" else "right")
    table.add_row(
        "PyTorch fp32 checkpoint", f"{report['bytes']['checkpoint'] / 1e6:.1f}", _num(report["miou"]["torch"]), ""
    )
    for variant in ("fp32", "int8"):
        agreement = report["agreement"][variant]
        table.add_row(
            f"ONNX {variant}" + (" (served)" if report["default"] == variant else ""),
            f"{report['bytes'][variant] / 1e6:.1f}",
            _num(report["miou"][variant]),
            f"{100 * agreement['mean_disagreement']:.3f}% ({100 * agreement['max_image_disagreement']:.3f}%)",
        )
    rprint(table)
    rprint(f"{report['rule']}; logged to {report['artifacts']}, tags onnx.* on the version")
    return 0


def _registry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default %(default)s)")
    parser.add_argument(
        "--artifacts",
        type=Path,
        default=Path("artifacts"),
        help="stage outputs: the test split is read from ARTIFACTS/preprocess, "
        "decisions are written to ARTIFACTS/promotions (default %(default)s)",
    )


def _add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="export a version to ONNX (fp32 + int8), verify it on the test split, log it",
        description="Export a registered version (default @champion) to ONNX, quantize it to int8 with "
        "training images as calibration, compare both with PyTorch on the frozen test split, "
        "and log the files and the report to the version's run (tags onnx.*). "
        "`segflow serve` then runs the exported model.",
    )
    export.add_argument("--version", help="version number or alias (default: champion)")
    export.add_argument(
        "--exporter",
        choices=("dynamo", "torchscript"),  # segflow.export.export.EXPORTERS (it imports torch)
        default="dynamo",
        help="torch.onnx exporter: dynamo (default: minutes on a CPU) or torchscript (seconds, but its "
        "int8 file may lose too much to be served, and then fp32 is)",
    )
    _registry_arguments(export)
    export.set_defaults(func=_export)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="segflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="print the latest pipeline results")
    summary.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    summary.set_defaults(func=_summary)

    models = commands.add_parser("models", help="list registered versions with aliases and scores")
    _registry_arguments(models)
    models.set_defaults(func=_models)

    promote = commands.add_parser(
        "promote",
        help="compare a candidate with @champion on the test split; move the alias if it wins",
        description="Score the candidate and @champion on the frozen test split, print them side by side, "
        "and move @champion if the candidate passes the rule in params.yaml (promote:). "
        "Exits 1 when the candidate is refused.",
    )
    which = promote.add_mutually_exclusive_group()
    which.add_argument("--version", help="the version to promote (default: @candidate)")
    which.add_argument("--run", metavar="RUN_ID", help="promote the version registered by this MLflow run")
    promote.add_argument("--force", action="store_true", help="move @champion even if the candidate loses")
    _registry_arguments(promote)
    promote.set_defaults(func=_promote)

    rollback = commands.add_parser("rollback", help="move @champion back to the previous champion")
    _registry_arguments(rollback)
    rollback.set_defaults(func=_rollback)

    _add_export_command(commands)

    add_serve_command(commands)
    add_predict_command(commands)
    add_labelstudio_commands(commands)
    add_sweep_command(commands)

    args = parser.parse_args(argv)
    from segflow.errors import SegflowError

    try:
        code = args.func(args)
    except SegflowError as exc:
        rprint(f"[red]{exc}[/]")
        code = 1
    sys.exit(code)
