"""`segflow serve`: a web page and a JSON API on the `@champion` model.

`create_app` (`segflow.serving.app`) builds the FastAPI application around a
`ModelSource` (`segflow.serving.source`): a registered version by alias or number, or an
exported ONNX file. `run` serves it with uvicorn.
"""

from __future__ import annotations

import logging
from pathlib import Path

from segflow.config import Params
from segflow.registry import tracking
from segflow.serving.app import create_app
from segflow.serving.source import ModelSource

__all__ = ["create_app", "ModelSource", "run"]

log = logging.getLogger(__name__)


def run(
    params: Params,
    spec: str | Path | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    runtime: str | None = None,
) -> None:
    """Serve `spec` (default ``models:/<mlflow.model_name>@champion``) until interrupted.

    The caller configures MLflow tracking (`segflow.registry.tracking.configure`) first.
    """
    import uvicorn

    # The address given here is the one the app's guards (token, allowed hosts) must know.
    serve = params.serve.model_copy(update={"host": host or params.serve.host, "port": port or params.serve.port})
    source = ModelSource(spec or f"models:/{params.mlflow.model_name}@{tracking.CHAMPION}", runtime or serve.runtime)
    app = create_app(source, serve)
    info = app.state.holder.current.info
    host, port = serve.host, serve.port
    log.info(
        "serving %s version %s (%s, %.1f MB) on http://%s:%d",
        info.name,
        info.version,
        info.runtime,
        info.bytes / 1e6,
        host,
        port,
    )
    uvicorn.run(app, host=host, port=port, log_level="info")
