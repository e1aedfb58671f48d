"""`segflow predict SOURCE --out DIR`: the command line of a predict run.

The model is ``models:/<mlflow.model_name>@champion`` unless ``--version``, ``--alias``,
``--run``, ``--onnx`` or ``--model`` names another, loaded as `segflow serve` loads it
(`segflow.runtime.source.ModelSource`: a version's exported ONNX model when it has one).
Defaults come from params.yaml's ``predict:``; the flags override them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import get_args

from segflow.config.predict import ExportFormat, PredictSort
from segflow.config.registry import Runtime

__all__ = ["add_predict_command", "SUMMARY_ROWS"]

#: Photos listed in the printed summary (all of them are in summary.csv).
SUMMARY_ROWS = 15


def add_predict_command(commands: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the `segflow` command's sub-commands."""
    parser = commands.add_parser(
        "predict",
        help="segment a folder of new photos; export the predictions for correction in VIA, CVAT, LabelMe, COCO",
        description="Segment every photo of SOURCE (a folder, a glob such as 'photos/**/*.jpg', a .zip/.tar.gz "
        "archive, or one image) with @champion, writing OUT/masks/ (class-index PNGs at each photo's size), "
        "OUT/summary.csv (least confident first) and, with --export, polygons to correct in your annotation "
        "tool. Photos done before by the same model are skipped (--force redoes them); unreadable ones are "
        "reported and skipped.",
    )
    parser.add_argument("source", help="folder, glob, archive or image")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--version", help="a version number of the params' model")
    model.add_argument("--alias", help="an alias of the params' model (default: champion)")
    model.add_argument("--run", metavar="RUN_ID", help="the version this MLflow run registered")
    model.add_argument("--onnx", metavar="FILE", help="an exported .onnx file (no registry needed)")
    model.add_argument("--model", metavar="SPEC", help="models:/<name>@<alias>, models:/<name>/<n>, .onnx or .pt")
    parser.add_argument("--runtime", choices=get_args(Runtime), help="default: serve.runtime")
    parser.add_argument("--export", choices=get_args(ExportFormat), help="default: predict.export")
    parser.add_argument("--simplify", type=float, metavar="PX", help="polygon tolerance (default: predict.simplify)")
    parser.add_argument("--min-area", type=int, metavar="PX", help="smallest exported part (predict.min_area)")
    parser.add_argument("--sort", choices=get_args(PredictSort), help="summary order (default: predict.sort)")
    parser.add_argument("--overlay", action=argparse.BooleanOptionalAction, help="colour overlays (predict.overlay)")
    parser.add_argument("--shares", action=argparse.BooleanOptionalAction, help="class-share table (predict.shares)")
    parser.add_argument("--force", action="store_true", help="predict photos done before again")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default %(default)s)")
    parser.set_defaults(func=predict_command)


def _spec(args: argparse.Namespace, name: str) -> str:
    """The model source the arguments name (registry lookups for --run)."""
    if args.onnx or args.model:
        return args.onnx or args.model
    if args.version:
        return f"models:/{name}/{args.version}"
    if args.run:
        import mlflow

        from segflow.registry.promote import resolve_candidate

        return f"models:/{name}/{resolve_candidate(mlflow.MlflowClient(), name, None, args.run)}"
    return f"models:/{name}@{args.alias or 'champion'}"


def predict_command(args: argparse.Namespace) -> int:
    """Run `segflow predict`; print the summary table. Exit 1 when no photo could be read."""
    from rich import print as rprint
    from rich.table import Table

    from segflow.config import load_params
    from segflow.predict.batch import predict_source
    from segflow.predict.segment import DONE_BEFORE, FAILED, PREDICTED
    from segflow.registry import tracking
    from segflow.runtime.source import ModelSource

    params = load_params(args.params)
    overrides = {
        key: getattr(args, key)
        for key in ("export", "simplify", "min_area", "sort", "overlay", "shares")
        if getattr(args, key) is not None
    }
    options = params.predict.model_copy(update=overrides)
    tracking.configure(Path.cwd())
    spec = _spec(args, params.mlflow.model_name)
    _, predictor = ModelSource(spec, args.runtime or params.serve.runtime).load()
    run = predict_source(
        predictor,
        args.source,
        args.out,
        options,
        label_map=params.classes.label_map,
        label_key=params.fetch.label_key,
        unlabeled=params.rasterize.unlabeled,
        force=args.force,
        fetch=params.fetch,
    )
    counts = {status: sum(o.status == status for o in run.outcomes) for status in (PREDICTED, DONE_BEFORE, FAILED)}
    order = "least confident first" if options.sort == "uncertain" else "by name"
    table = Table(title=f"{len(run.outcomes)} photos, {order} ({run.model})")
    for column in ("#", "photo", "confidence", "size", "status"):
        table.add_column(column, justify="right" if column in ("#", "confidence") else "left")
    for rank, outcome in enumerate(run.outcomes[:SUMMARY_ROWS], start=1):
        record = outcome.record or {}
        confidence = f"{record['confidence']:.3f}" if outcome.record else ""
        size = f"{record['width']}x{record['height']}" if outcome.record else ""
        status = f"[red]{outcome.status}: {outcome.error}[/]" if outcome.status == FAILED else outcome.status
        table.add_row(str(rank), outcome.name, confidence, size, status)
    rprint(table)
    failed = [o for o in run.outcomes if o.status == FAILED]
    for outcome in failed[:SUMMARY_ROWS] if len(run.outcomes) > SUMMARY_ROWS else []:
        rprint(f"[red]failed: {outcome.name}: {outcome.error}[/]")
    rprint(
        f"{counts[PREDICTED]} predicted ({run.images_per_second:.2f} images/s), {counts[DONE_BEFORE]} done before "
        f"(--force redoes them), {counts[FAILED]} failed; masks in {args.out / 'masks'}, all rows in "
        f"{args.out / 'summary.csv'}"
    )
    if options.export != "none":
        rprint(f"{options.export} pre-annotations in {args.out / 'export'} (see README, Label faster)")
    return 1 if counts[FAILED] == len(run.outcomes) else 0
