"""`segflow serve`, `segflow backend` and `segflow pull-annotations`: the service's commands.

    segflow serve [--model SPEC | --onnx FILE]      web page + JSON API on @champion
    segflow backend [--label-studio URL]            the service with Label Studio's ML backend
                                                    protocol under /labelstudio (pre-annotation)
    segflow pull-annotations --project N --out DIR  the project's finished annotations -> DIR

serve and backend take the same model options (`_model_options`). The Label Studio commands
read its address from --label-studio or $LABEL_STUDIO_URL and its token from
$LABEL_STUDIO_API_KEY (`segflow.serving.labelstudio_client`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import get_args

from segflow.config.registry import Runtime

__all__ = ["add_serve_command", "add_labelstudio_commands"]

log = logging.getLogger(__name__)


def _spec(args: argparse.Namespace, name: str) -> str:
    """The model the options name: a file, a version of the params' model, or its @champion."""
    return args.onnx or args.model or (f"models:/{name}/{args.version}" if args.version else f"models:/{name}@champion")


def _serve(args: argparse.Namespace) -> int:
    """Serve the web page and JSON API until interrupted."""
    from segflow.config import load_params
    from segflow.registry import tracking
    from segflow.serving.app import run

    params = load_params(args.params)
    tracking.configure(Path.cwd())
    run(params, _spec(args, params.mlflow.model_name), host=args.host, port=args.port, runtime=args.runtime)
    return 0


def _backend(args: argparse.Namespace) -> int:
    import uvicorn

    from segflow.config import load_params
    from segflow.registry import tracking
    from segflow.runtime.source import ModelSource
    from segflow.serving.labelstudio import PREFIX, create_backend
    from segflow.serving.labelstudio_client import LabelStudio

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = load_params(args.params)
    tracking.configure(Path.cwd())
    studio = LabelStudio.from_env(args.label_studio)
    serve = params.serve.model_copy(update={"host": args.host or params.serve.host, "port": args.port or 9090})
    source = ModelSource(_spec(args, params.mlflow.model_name), args.runtime or serve.runtime)
    app = create_backend(source, serve, studio, params.classes.label_map)
    info = app.state.holder.current.info
    log.info(
        "%s version %s: give Label Studio the model URL http://%s:%d%s (it reads photos from %s)",
        info.name,
        info.version,
        serve.host,
        serve.port,
        PREFIX,
        studio.url,
    )
    uvicorn.run(app, host=serve.host, port=serve.port, log_level="info")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from rich import print as rprint

    from segflow.config import load_params
    from segflow.serving.labelstudio_client import LabelStudio
    from segflow.serving.labelstudio_pull import EXPORT_NAME, pull_annotations
    from segflow.serving.uploads import upload_limit

    params = load_params(args.params)
    studio = LabelStudio.from_env(args.label_studio)
    report = pull_annotations(studio, args.project, args.out, upload_limit(params.serve.max_upload_bytes))
    rprint(
        f"project {args.project} ({report.title!r}): {report.tasks} annotated tasks, {report.annotations} "
        f"annotations, {report.images} photos -> {args.out}/{EXPORT_NAME} and {args.out}/images/"
    )
    rprint(f"next: fetch.source: {args.out} in params.yaml (once), `dvc add {args.out}` if DVC tracks it, `dvc repro`")
    return 0


def _model_options(parser: argparse.ArgumentParser, port: str) -> None:
    """Which model to serve, with which runtime, on which address (serve and backend)."""
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="SPEC", help="models:/<name>@<alias>, models:/<name>/<n>, .onnx or .pt")
    source.add_argument("--version", help="a version number of the params' model")
    source.add_argument("--onnx", metavar="FILE", help="an exported .onnx file (no registry needed)")
    parser.add_argument("--runtime", choices=get_args(Runtime), help="default: serve.runtime")
    parser.add_argument("--host", help="default: serve.host")
    parser.add_argument("--port", type=int, help=f"default: {port}")


def _params_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default %(default)s)")


def _label_studio_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label-studio", metavar="URL", help="Label Studio's address (default: $LABEL_STUDIO_URL)")


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the `segflow` command's sub-commands."""
    serve = commands.add_parser(
        "serve",
        help="web page + JSON API on the @champion model",
        description="Serve the page (GET /) and the API (POST /predict, GET /model, /health, /metrics, "
        "POST /reload) on models:/<name>@champion, reloading when the alias moves. The "
        "version's exported ONNX model runs if there is one (segflow export).",
    )
    _model_options(serve, "serve.port")
    _params_option(serve)
    serve.set_defaults(func=_serve)


def add_labelstudio_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``backend`` and ``pull-annotations`` to the `segflow` command's sub-commands."""
    backend = commands.add_parser(
        "backend",
        help="the service plus Label Studio's ML backend protocol (live pre-annotation)",
        description="Serve the page and API of `segflow serve`, and under /labelstudio the ML backend "
        "protocol (/health, /setup, /predict, /webhook) on @champion: connect a Label Studio project to "
        "http://HOST:PORT/labelstudio. Photos are fetched from Label Studio ($LABEL_STUDIO_URL or "
        "--label-studio) with the token $LABEL_STUDIO_API_KEY.",
    )
    _model_options(backend, "9090 (Label Studio's usual ML backend port)")
    _label_studio_option(backend)
    _params_option(backend)
    backend.set_defaults(func=_backend)

    pull = commands.add_parser(
        "pull-annotations",
        help="a Label Studio project's finished annotations into a folder for fetch.source",
        description="Export the project's tasks with submitted annotations (JSON) and their photos from "
        "Label Studio ($LABEL_STUDIO_URL or --label-studio, token $LABEL_STUDIO_API_KEY) into OUT, "
        "replacing what an earlier pull wrote there; point fetch.source at OUT and run dvc repro.",
    )
    pull.add_argument("--project", type=int, required=True, help="the project id (the number in its URL)")
    pull.add_argument("--out", type=Path, required=True, help="the folder to write (replaced whole)")
    _label_studio_option(pull)
    _params_option(pull)
    pull.set_defaults(func=_pull)
