"""The web service: `create_app(source, serve)` builds the FastAPI application.

    GET  /          the page: choose or drop a photo, Segment, see mask, overlay, legend
    POST /predict   an image (multipart field 'file', or the raw body) -> a palette PNG of
                    class indices, or JSON (?format=json): per-class pixel shares, and with
                    ?polygons=true each class region as a polygon, ?mask=true the PNG inline
    GET  /health    liveness, the model version, the last failed reload
    GET  /model     name, version, alias, runtime, classes and colours, test metrics
    GET  /metrics   Prometheus text: requests, latency and inference histograms
    POST /reload    load the source's model now if it changed (e.g. @champion moved)

Bad input is a 4xx whose JSON ``detail`` says what is wrong (`segflow.serving.decode`);
the service keeps serving. Decoding, the model and encoding run in worker threads, so the
event loop keeps accepting requests while a photo is being segmented.
"""
from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from time import perf_counter
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.datastructures import UploadFile

from segflow.config import ServeParams
from segflow.errors import ConfigError
from segflow.serving.decode import InputError, decode_image
from segflow.serving.holder import ModelHolder
from segflow.serving.metrics import Metrics
from segflow.serving.regions import class_shares, mask_png, polygons
from segflow.serving.source import ModelSource

__all__ = ["UPLOAD_ENV", "upload_limit", "create_app"]

#: Environment variable that overrides serve.max_upload_bytes on one machine.
UPLOAD_ENV = "SEGFLOW_MAX_UPLOAD_BYTES"
PAGE = Path(__file__).with_name("static") / "index.html"


def upload_limit(serve: ServeParams) -> int:
    """The request body limit: $SEGFLOW_MAX_UPLOAD_BYTES, else serve.max_upload_bytes."""
    raw = os.environ.get(UPLOAD_ENV)
    if raw is None:
        return serve.max_upload_bytes
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError(f"{UPLOAD_ENV}={raw!r}: give a positive number of bytes, e.g. 20000000")
    return int(raw)


async def _limited(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body in chunks, stopped with a 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    too_big = f"is over the upload limit of {limit:,} bytes (serve.max_upload_bytes, or {UPLOAD_ENV})"
    if declared.isdigit() and int(declared) > limit:
        raise InputError(413, f"request body of {int(declared):,} bytes {too_big}")
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(413, f"request body {too_big}")
        yield chunk


async def _read_upload(request: Request, limit: int) -> bytes:
    """The uploaded file: the multipart form's file part, or the whole raw body."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return b"".join([chunk async for chunk in _limited(request, limit)])
    try:
        form = await MultiPartParser(request.headers, _limited(request, limit), max_files=1, max_fields=8).parse()
    except MultiPartException as exc:
        raise InputError(400, f"malformed multipart body ({exc}): send one file in the field 'file'") from None
    files = [value for _, value in form.multi_items() if isinstance(value, UploadFile)]
    if not files:
        raise InputError(400, "the multipart body has no file: send the image in the field 'file'")
    try:
        return await files[0].read()
    finally:
        await form.close()


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


def create_app(source: ModelSource | str | Path, serve: ServeParams = ServeParams()) -> FastAPI:
    """The service for `source` (a `ModelSource`, or its spec); loads the model now.

    Raises:
        SegflowError: the model cannot be loaded (the message says why and what to run).
    """
    holder = ModelHolder(source if isinstance(source, ModelSource) else ModelSource(source, serve.runtime))
    limit = upload_limit(serve)
    metrics = Metrics()
    page = PAGE.read_text()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder.start_polling(serve.poll_seconds)
        yield
        holder.stop_polling()

    app = FastAPI(title="segflow", summary="Semantic segmentation of photos with the @champion model",
                  lifespan=lifespan)
    app.state.holder = holder
    app.state.metrics = metrics
    app.add_middleware(_Measure, metrics=metrics)

    @app.exception_handler(InputError)
    async def refuse(request: Request, exc: InputError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    async def health() -> dict:
        info = holder.current.info
        return {"status": "ok", "model": {"name": info.name, "version": info.version, "runtime": info.runtime},
                "reloads": holder.reloads, "last_reload_error": holder.last_error}

    @app.get("/model")
    async def model() -> dict:
        return holder.current.info.as_dict()

    @app.get("/metrics", response_class=PlainTextResponse)
    async def prometheus() -> PlainTextResponse:
        info = holder.current.info
        labels = {"name": info.name, "version": str(info.version), "runtime": info.runtime}
        return PlainTextResponse(metrics.render(labels, holder.reloads), media_type="text/plain; version=0.0.4")

    @app.post("/reload")
    async def reload() -> JSONResponse:
        try:
            changed = await run_in_threadpool(holder.reload)
        except Exception as exc:  # noqa: BLE001 - reported, and the old model keeps serving
            holder.last_error = f"{type(exc).__name__}: {exc}"
            return JSONResponse({"detail": f"reload failed ({holder.last_error}); still serving version "
                                           f"{holder.current.info.version}"}, status_code=503)
        return JSONResponse({"reloaded": changed, "model": holder.current.info.as_dict()})

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
        data = await _read_upload(request, limit)
        image = await run_in_threadpool(decode_image, data, serve.max_pixels, serve.min_side)
        result, model_seconds = await run_in_threadpool(predictor.predict_timed, image)
        metrics.observe_inference(info.runtime, model_seconds)
        headers = {"X-Model-Version": str(info.version), "X-Model-Runtime": info.runtime}
        if format == "png":
            return Response(await run_in_threadpool(mask_png, result, info.palette), media_type="image/png",
                            headers=headers)
        body = {
            "model": {"name": info.name, "version": info.version, "runtime": info.runtime},
            "width": int(image.shape[1]), "height": int(image.shape[0]),
            "classes": class_shares(result, info.class_names, info.palette),
        }
        if polygons_:
            body["regions"] = await run_in_threadpool(polygons, result, info.class_names, simplify)
        if mask:
            png = await run_in_threadpool(mask_png, result, info.palette)
            body["mask_png"] = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        body["ms"] = {"model": round(1000 * model_seconds, 2), "total": round(1000 * (perf_counter() - start), 2)}
        return JSONResponse(body, headers=headers)

    return app
