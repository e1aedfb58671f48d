"""`segflow backend` and `segflow pull-annotations`: the loop with Label Studio.

    segflow backend [--label-studio URL]            the service with Label Studio's ML backend
                                                    protocol under /labelstudio (pre-annotation)
    segflow pull-annotations --project N --out DIR  the project's finished annotations -> DIR

Both read Label Studio's address from --label-studio or $LABEL_STUDIO_URL and its token
from $LABEL_STUDIO_API_KEY (`segflow.serving.labelstudio_client`).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import get_args

from segflow.config.registry import Runtime

__all__ = ["add_labelstudio_commands"]

log = logging.getLogger(__name__)


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
    name = params.mlflow.model_name
    spec = args.onnx or args.model or (f"models:/{name}/{args.version}" if args.version else f"models:/{name}@champion")
    app = create_backend(ModelSource(spec, args.runtime or serve.runtime), serve, studio, params.classes.label_map)
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
    source = backend.add_mutually_exclusive_group()
    source.add_argument("--model", metavar="SPEC", help="models:/<name>@<alias>, models:/<name>/<n>, .onnx or .pt")
    source.add_argument("--version", help="a version number of the params' model")
    source.add_argument("--onnx", metavar="FILE", help="an exported .onnx file (no registry needed)")
    backend.add_argument("--label-studio", metavar="URL", help="Label Studio's address (default: $LABEL_STUDIO_URL)")
    backend.add_argument("--runtime", choices=get_args(Runtime), help="default: serve.runtime")
    backend.add_argument("--host", help="default: serve.host")
    backend.add_argument("--port", type=int, help="default: 9090 (Label Studio's usual ML backend port)")
    backend.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default %(default)s)")
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
    pull.add_argument("--label-studio", metavar="URL", help="Label Studio's address (default: $LABEL_STUDIO_URL)")
    pull.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default %(default)s)")
    pull.set_defaults(func=_pull)
