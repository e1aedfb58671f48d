"""The web service: `create_app(source, serve)` builds the FastAPI application; `run`
serves it with uvicorn (`segflow serve`).

    GET  /          the page: choose or drop a photo, Segment, see mask, overlay, legend
                    (HEAD too; its script and styles are /static/page.js and page.css)
    POST /predict   an image (multipart field 'file', or the raw body) -> a palette PNG of
                    class indices, or JSON (?format=json): per-class pixel shares, and with
                    ?polygons=true each class region as a polygon, ?mask=true the PNG inline
    GET  /health    liveness, the model version, the last failed reload
    GET  /model     name, version, alias, runtime, classes and colours, test metrics, and
                    under ``browser`` what the page's in-browser mode loads (`segflow.serving.browser`:
                    GET /browser/model/<sha256>.onnx, /browser/runtime/..., /browser/worker.mjs)
    GET  /metrics   Prometheus (text, or OpenMetrics if asked): requests, latency and
                    inference histograms, bytes of uploads still arriving, the model, reloads
    POST /reload    load the source's model now if it changed (e.g. @champion moved)
    GET  /docs, /redoc, /openapi.json   the API's description, only with serve.docs: true

Bad input is a 4xx whose JSON ``detail`` says what is wrong (`segflow.serving.decode`);
the service keeps serving. Decoding, the model and encoding run in worker threads, so the
event loop keeps accepting requests while a photo is being segmented. A client that hangs
up mid-upload is counted as status 499 (client closed request), not as a server error.

Uploads (`segflow.serving.uploads`): a body is received before its request waits for a turn,
within serve.upload_seconds (else 408), under the upload limit (else 413) and under
serve.max_buffered_bytes for all unfinished uploads together (else 503 with Retry-After).

Memory: at most `serve.max_concurrent` requests decode, segment and encode at once (others
wait `serve.queue_seconds`, then get 503 with Retry-After; `segflow.serving.gate`). For an
image of N <= `serve.max_pixels` pixels, C classes and working scale s (the model's
long_side / the image's longer side; 1 without one), each holds at most
8·N + (3 + 4·C)·s²·N bytes, plus min(10·N, `UPSAMPLE_BYTES` = 256 MiB) when s != 1 (the
upload waits in a temporary file past 1 MiB): decoding peaks at 7N (`segflow.serving.decode`),
the full-size image (3N) is freed once a resized copy exists, the working image and its
float32 logits take (3 + 4·C)·s²·N (s²·N <= long_side²), the uint8 mask N, the bilinear
resize back is capped (`segflow.inference.segment`). When s < 1 no full-size RGB copy exists:
the decoder's rows are shrunk a band at a time (`Segmenter.scaled_rows`).
Measured: a 16 MP 16-bit PNG with C = 3 at s = 1 peaks at about 16 bytes a pixel (bound 23).; a 49 MP
16-bit PNG at s = 0.07 grows the peak by about 250 MB (tests/serving/test_gate.py).

Guards (`segflow.serving.security`): every request's Host header must be in
`serve.allowed_hosts` (or be `serve.host`), else 400 (DNS rebinding); every response carries
a Content-Security-Policy (the service's own scripts and styles only, never framed),
nosniff and no-referrer; POST /reload needs ``Authorization: Bearer $SEGFLOW_SERVE_TOKEN``
when that variable is set, is refused outright (403) on a non-loopback `serve.host` when it
is not, and is refused (403) when a browser sends it from another web site.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from time import perf_counter
from typing import Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from segflow.config import Params, ServeParams
from segflow.data.trace import polygons
from segflow.registry.tracking import CHAMPION
from segflow.runtime.encode import class_shares, mask_png
from segflow.runtime.holder import ModelHolder
from segflow.runtime.source import ModelSource
from segflow.serving.browser import CrossOriginIsolation, add_browser
from segflow.serving.decode import InputError, open_image
from segflow.serving.gate import Gate, GiveBackMemory
from segflow.serving.prometheus import Metrics
from segflow.serving.security import TOKEN_ENV, AllowedHosts, SecurityHeaders, add_docs, allowed_hosts, mutation_guard
from segflow.serving.uploads import UPLOAD_ENV, UploadBudget, receive_upload, upload_limit

__all__ = ["UPLOAD_ENV", "TOKEN_ENV", "CLIENT_CLOSED", "upload_limit", "create_app", "run"]

log = logging.getLogger(__name__)

#: Status recorded for a request whose client hung up before sending its body (nginx's
#: "client closed request"): the client's doing, so not a 5xx that would page someone.
CLIENT_CLOSED = 499
#: The page and the files it loads (GET / and /static/NAME), with their media types.
STATIC = Path(__file__).with_name("static")
ASSETS = {"page.js": "text/javascript", "page.css": "text/css"}


class _Measure:
    """ASGI middleware: every HTTP request's route, status and latency into `metrics`."""

    def __init__(self, app, metrics: Metrics) -> None:  # noqa: ANN001 (an ASGI app)
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = perf_counter(), 500

        async def record_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            # The route template, not the path: unknown paths must not grow the metrics.
            route = getattr(scope.get("route"), "path", "other")
            self.metrics.observe_request(scope["method"], route, status, perf_counter() - start)


def _body_unless_head(request: Request, body: bytes, media_type: str) -> Response:
    """`body`, or for HEAD its headers alone (the same Content-Length, no body)."""
    if request.method != "HEAD":
        return Response(body, media_type=media_type)
    return Response(media_type=media_type, headers={"content-length": str(len(body))})


def create_app(source: ModelSource | str | Path, serve: ServeParams | None = None) -> FastAPI:
    """The service for `source` (a `ModelSource`, or its spec); loads the model now.

    Raises:
        SegflowError: the model cannot be loaded (the message says why and what to run).
    """
    serve = serve or ServeParams()
    holder = ModelHolder(source if isinstance(source, ModelSource) else ModelSource(source, serve.runtime))
    limit = upload_limit(serve.max_upload_bytes)
    budget = UploadBudget(serve.max_buffered_bytes, serve.upload_seconds)
    guard = mutation_guard(serve)
    gate = Gate(serve.max_concurrent, serve.queue_seconds)
    metrics = Metrics(partial(_model_state, holder), uploading=lambda: budget.held)
    app, describe_browser = _application(holder, metrics, serve)
    _add_error_handlers(app)
    _add_page(app)
    _add_model_routes(app, holder, metrics, describe_browser, guard)
    _add_predict(app, holder, metrics, serve, limit=limit, budget=budget, gate=gate)
    return app


def _model_state(holder: ModelHolder) -> tuple[dict[str, str], int]:
    """The served model's labels and the reload count, as the metrics report them."""
    info = holder.current.info
    return {"name": info.name, "runtime": info.runtime, "version": str(info.version)}, holder.reloads


def _application(holder: ModelHolder, metrics: Metrics, serve: ServeParams) -> tuple[FastAPI, Callable]:
    """The FastAPI application with its middleware and the in-browser mode's routes;
    returns it and the coroutine describing the in-browser mode (`add_browser`)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder.start_polling(serve.poll_seconds)
        yield
        holder.stop_polling()

    # The API docs only when serve.docs asks: they describe every endpoint to whoever can reach
    # the service, and their pages load code from a CDN.
    app = FastAPI(
        title="segflow",
        summary="Semantic segmentation of photos with the @champion model",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if serve.docs else None,
    )
    app.state.holder = holder
    app.state.metrics = metrics
    app.add_middleware(GiveBackMemory)
    app.add_middleware(AllowedHosts, allowed=allowed_hosts(serve))
    # The in-browser mode (segflow.serving.browser): its routes, its worker's policy, isolation.
    describe_browser, browser_policies = add_browser(app, holder)
    app.add_middleware(SecurityHeaders, policies={**browser_policies, **(add_docs(app) if serve.docs else {})})
    app.add_middleware(CrossOriginIsolation)
    app.add_middleware(_Measure, metrics=metrics)  # added last = outermost: refused hosts are counted too
    return app, describe_browser


def _add_error_handlers(app: FastAPI) -> None:
    """Bad input -> its 4xx with a ``detail``; a client gone mid-upload -> `CLIENT_CLOSED`."""

    @app.exception_handler(InputError)
    async def refuse(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_closed(request: Request, exc: ClientDisconnect) -> Response:
        # Nobody is left to read this answer; it sets the status the metrics record.
        log.info(
            "%s %s: the client closed the connection before sending the whole body (%d)",
            request.method,
            request.url.path,
            CLIENT_CLOSED,
        )
        return Response(status_code=CLIENT_CLOSED)


def _add_page(app: FastAPI) -> None:
    """GET (and HEAD) / and /static/NAME: the page and the files it loads, read once now."""
    page = (STATIC / "index.html").read_bytes()
    assets = {name: (STATIC / name).read_bytes() for name in ASSETS}

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def index(request: Request) -> Response:
        return _body_unless_head(request, page, "text/html; charset=utf-8")

    @app.api_route("/static/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    async def static(request: Request, name: str) -> Response:
        if name not in assets:
            raise HTTPException(404, f"no static file {name!r}: the page loads {sorted(assets)}")
        return _body_unless_head(request, assets[name], f"{ASSETS[name]}; charset=utf-8")


def _add_model_routes(
    app: FastAPI, holder: ModelHolder, metrics: Metrics, describe_browser: Callable, guard: Callable
) -> None:
    """GET /health, /model and /metrics; POST /reload behind `guard`."""

    @app.get("/health")
    async def health() -> dict:
        info = holder.current.info
        return {
            "status": "ok",
            "model": {"name": info.name, "version": info.version, "runtime": info.runtime},
            "reloads": holder.reloads,
            "last_reload_error": holder.last_error,
        }

    @app.get("/model")
    async def model() -> dict:
        return {**holder.current.info.as_dict(), "browser": await describe_browser()}

    @app.get("/metrics", response_class=Response)
    async def prometheus(request: Request) -> Response:
        body, content_type = metrics.exposition(request.headers.get("accept", ""))
        return Response(body, media_type=content_type)

    @app.post("/reload", dependencies=[Depends(guard)])
    async def reload() -> JSONResponse:
        try:
            changed = await run_in_threadpool(holder.reload)
        except Exception:  # noqa: BLE001 - reported (holder.last_error), and the old model keeps serving
            return JSONResponse(
                {"detail": f"reload failed ({holder.last_error}); still serving version {holder.current.info.version}"},
                status_code=503,
            )
        return JSONResponse({"reloaded": changed, "model": holder.current.info.as_dict()})


def _add_predict(
    app: FastAPI,
    holder: ModelHolder,
    metrics: Metrics,
    serve: ServeParams,
    *,
    limit: int,
    budget: UploadBudget,
    gate: Gate,
) -> None:
    """POST /predict: a photo -> its mask as a palette PNG, or JSON (shares, polygons, PNG);
    the body within `limit` and `budget`, then a turn at `gate`."""

    @app.post("/predict", responses={200: {"content": {"image/png": {}, "application/json": {}}}})
    async def predict(
        request: Request,
        format: Literal["png", "json"] = Query("png", description="png: palette PNG of class indices; json: shares"),
        polygons_: bool = Query(False, alias="polygons", description="json: each class region as a polygon"),
        mask: bool = Query(False, description="json: include the mask PNG as a data URL"),
        simplify: float = Query(1.0, ge=0.0, le=100.0, description="polygon tolerance in pixels (0 = exact)"),
    ) -> Response:
        predictor = holder.current  # this request's model, even if a reload swaps it meanwhile
        info = predictor.info
        start = perf_counter()
        # The body first (bounded in size, time and in all: segflow.serving.uploads), then a turn.
        async with receive_upload(request, limit, budget) as upload, gate.turn():
            load = partial(open_image, upload, serve.max_pixels, serve.min_side)  # its rows, a band at a time
            result, model_seconds = await run_in_threadpool(predictor.predict_from, load)
            metrics.observe_inference(info.runtime, model_seconds)
            headers = {"X-Model-Version": str(info.version), "X-Model-Runtime": info.runtime}
            if format == "png":
                return Response(
                    await run_in_threadpool(mask_png, result, info.palette), media_type="image/png", headers=headers
                )
            body = {
                "model": {"name": info.name, "version": info.version, "runtime": info.runtime},
                "width": int(result.shape[1]),
                "height": int(result.shape[0]),
                "classes": class_shares(result, info.class_names, info.palette),
            }
            if polygons_:
                body["regions"] = await run_in_threadpool(polygons, result, info.class_names, simplify)
            if mask:
                png = await run_in_threadpool(mask_png, result, info.palette)
                body["mask_png"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            body["ms"] = {"model": round(1000 * model_seconds, 2), "total": round(1000 * (perf_counter() - start), 2)}
            return JSONResponse(body, headers=headers)


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
    source = ModelSource(spec or f"models:/{params.mlflow.model_name}@{CHAMPION}", runtime or serve.runtime)
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
