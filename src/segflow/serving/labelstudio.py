"""Label Studio's ML backend protocol on the served model, under ``/labelstudio/``.

Connect a project to ``http://<service>/labelstudio`` (Settings > Model); Label Studio then calls

    GET  /labelstudio/health   liveness and the model version
    POST /labelstudio/setup    the project's labeling config: {"project", "schema"} ->
                               {"model_version"}, or 400 naming labels that are no class
                               (`segflow.serving.labelstudio_config`)
    POST /labelstudio/predict  {"tasks": [...], "label_config"} -> {"results": [one prediction
                               a task], "model_version"}: the photo fetched from Label Studio
                               with the token (`segflow.serving.labelstudio_client`: only its own
                               files, at most serve.max_upload_bytes and serve.max_pixels), the
                               mask as brush RLE (one result a class) or polygons; score = the mean
                               confidence, so Label Studio's "prediction score" ordering
                               (Uncertainty sampling) shows the least confident photo first. A task
                               that fails gets {"error": why} (Label Studio skips it), not a 500.
    POST /labelstudio/webhook  records that annotations arrived (counted in /labelstudio/health,
                               logged); nothing is trained in the request: `segflow pull-annotations`
                               then `dvc repro` do that.

model_version is the served model's registered version. Label Studio sends no token an ML
backend could check but HTTP Basic auth (its "Use authentication" fields): with
$SEGFLOW_SERVE_TOKEN set, the POST routes need it as the Basic password (or as Bearer);
without it they are refused on a non-loopback serve.host, as POST /reload is.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import threading
from collections import Counter
from datetime import UTC, datetime

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from segflow.config import ServeParams
from segflow.data.trace import polygons
from segflow.runtime.source import ModelSource
from segflow.serving.app import create_app
from segflow.serving.brush_rle import encode_brush_rle
from segflow.serving.decode import InputError, decode_image
from segflow.serving.gate import Gate
from segflow.serving.labelstudio_client import LabelStudio, LabelStudioError
from segflow.serving.labelstudio_config import Control, LabelConfigError, read_label_config
from segflow.serving.security import TOKEN_ENV
from segflow.serving.uploads import upload_limit

__all__ = ["PREFIX", "ANNOTATION_EVENTS", "labelstudio_routes", "create_backend"]

log = logging.getLogger(__name__)

#: Where the protocol's routes live on the service (the URL to give Label Studio).
PREFIX = "/labelstudio"
#: Webhook actions that mean annotations arrived.
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
#: Largest /setup, /predict or /webhook body: tasks carry URLs, not photos.
MAX_BODY = 5_000_000


def _guard(serve: ServeParams):  # noqa: ANN202 (a FastAPI dependency)
    token = os.environ.get(TOKEN_ENV) or None
    loopback = serve.host in ("127.0.0.1", "::1", "localhost")

    async def guard(request: Request) -> None:
        if token is None:
            if not loopback:
                raise HTTPException(
                    403,
                    f"{request.url.path} is disabled: the service listens on {serve.host} without a token; set "
                    f"{TOKEN_ENV} and give it to Label Studio as the Basic auth password (Settings > Model)",
                )
        else:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() == "basic":
                try:
                    given = base64.b64decode(given.strip(), validate=True).decode().partition(":")[2]
                except (binascii.Error, UnicodeDecodeError):
                    given = ""
            elif scheme.lower() != "bearer":
                given = ""
            if not hmac.compare_digest(given.strip().encode(), token.encode()):
                raise HTTPException(
                    401,
                    f"missing or wrong token: in Label Studio (Settings > Model > Use authentication) give any user "
                    f"and the value of {TOKEN_ENV} as the password",
                    headers={"WWW-Authenticate": 'Basic realm="segflow"'},
                )
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":  # a web page cannot send JSON cross-site without asking first
            raise HTTPException(415, f"{request.url.path} takes Content-Type: application/json, got {kind!r}")

    return guard


async def _json_body(request: Request) -> dict:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise InputError(413, f"request body of {int(declared):,} bytes is over {MAX_BODY:,}")
    body, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise InputError(413, f"request body over {MAX_BODY:,} bytes")
        body.append(chunk)
    try:
        data = json.loads(b"".join(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(400, f"the body is not JSON ({exc}); Label Studio sends JSON objects") from None
    if not isinstance(data, dict):
        raise InputError(400, f"the body is a JSON {type(data).__name__}, not an object")
    return data


def _results(mask: np.ndarray, control: Control, class_names: list[str]) -> list[dict]:
    """The prediction's results: per class a brush mask, or per region a polygon."""
    height, width = mask.shape
    common = {"from_name": control.from_name, "to_name": control.to_name, "type": control.kind}
    size = {"original_width": width, "original_height": height, "image_rotation": 0}
    if control.kind == "brushlabels":
        return [
            {
                **common,
                **size,
                "id": f"segflow-{index}",
                "value": {"format": "rle", "rle": encode_brush_rle(mask == index), "brushlabels": [label]},
            }
            for index, label in control.labels.items()
            if (mask == index).any()
        ]
    found = []
    for number, region in enumerate(polygons(mask, class_names)):
        index = class_names.index(region["label"])
        if index in control.labels:
            points = [[100.0 * x / width, 100.0 * y / height] for x, y in region["points"]]
            value = {"points": points, "closed": True, "polygonlabels": [control.labels[index]]}
            found.append({**common, **size, "id": f"segflow-{number}", "value": value})
    return found


class _Events:
    """What the webhook has been told since the service started."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.last: str | None = None
        self._lock = threading.Lock()

    def record(self, action: str, project: object) -> int:
        with self._lock:
            self.counts[action] += 1
            if action in ANNOTATION_EVENTS:
                self.last = datetime.now(UTC).isoformat(timespec="seconds")
            return sum(self.counts[a] for a in ANNOTATION_EVENTS)


def _control_of(config: object, class_names: list[str], label_map: dict) -> Control:
    """The project's labeling config read against the model's classes; 400 naming what is wrong."""
    try:
        return read_label_config(config, class_names, label_map)  # type: ignore[arg-type]
    except LabelConfigError as exc:
        raise InputError(400, str(exc)) from None


def _predict_task(task: object, control: Control, predictor, studio: LabelStudio, serve: ServeParams, limit) -> dict:  # noqa: ANN001
    """One task's prediction (its photo fetched from `studio`, bounded like an upload), or
    {"error": ...} naming the task: one bad task never fails the batch."""
    info = predictor.info
    try:
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise InputError(400, "a task without 'data'")
        url = task["data"].get(control.image_key)
        if not isinstance(url, str):
            raise InputError(400, f"the task's data has no image URL at {control.image_key!r}")
        image = decode_image(studio.download(url, limit), serve.max_pixels, serve.min_side)
        mask, score = predictor.predict_scored(image)
    except (InputError, LabelStudioError) as exc:
        where = task.get("id") if isinstance(task, dict) else None
        log.warning("Label Studio task %s: no prediction: %s", where, exc)
        return {"error": f"task {where}: {exc}"}
    return {
        "result": _results(mask, control, info.class_names),
        "score": round(float(score), 6),
        "model_version": str(info.version),
    }


def labelstudio_routes(app: FastAPI, serve: ServeParams, studio: LabelStudio, label_map: dict) -> APIRouter:
    """The protocol's routes over `app`'s model (``app.state.holder``), reading photos from `studio`."""
    holder, events = app.state.holder, _Events()
    limit, gate = upload_limit(serve.max_upload_bytes), Gate(serve.max_concurrent, serve.queue_seconds)
    router = APIRouter(prefix=PREFIX, tags=["Label Studio ML backend"])
    guarded = [Depends(_guard(serve))]

    @router.get("/health")
    async def health() -> dict:
        info = holder.current.info
        return {
            "status": "UP",
            "model_version": str(info.version),
            "model": {"name": info.name, "version": info.version, "runtime": info.runtime},
            "label_studio": studio.url,
            "annotation_events": sum(events.counts[a] for a in ANNOTATION_EVENTS),
            "last_annotation_event": events.last,
        }

    @router.post("/setup", dependencies=guarded)
    async def setup(request: Request) -> dict:
        body = await _json_body(request)
        info = holder.current.info
        control = _control_of(body.get("schema"), info.class_names, label_map)
        labels = {label: info.class_names[index] for index, label in control.labels.items()}
        log.info(
            "Label Studio project %s: %s %r -> classes %s", body.get("project"), control.kind, control.from_name, labels
        )
        return {"model_version": str(info.version), "labels": labels}

    @router.post("/predict", dependencies=guarded)
    async def predict(request: Request) -> dict:
        body = await _json_body(request)
        predictor = holder.current  # one model for the whole batch, even if a reload swaps it
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise InputError(400, "no 'tasks': send {'tasks': [task, ...], 'label_config': '<View>...</View>'}")
        control = _control_of(body.get("label_config"), predictor.info.class_names, label_map)
        results = []
        for task in tasks:
            async with gate.turn():
                results.append(await run_in_threadpool(_predict_task, task, control, predictor, studio, serve, limit))
        return {"results": results, "model_version": str(predictor.info.version)}

    @router.post("/webhook", dependencies=guarded, status_code=201)
    async def webhook(request: Request) -> JSONResponse:
        body = await _json_body(request)
        action = str(body.get("action") or "")
        if not action:
            raise InputError(400, "no 'action': Label Studio's webhooks send e.g. {'action': 'ANNOTATION_CREATED'}")
        project = (
            (body.get("project") or {}).get("id") if isinstance(body.get("project"), dict) else body.get("project")
        )
        total = events.record(action, project)
        if action in ANNOTATION_EVENTS:
            log.info("Label Studio project %s: %s (%d so far); run `segflow pull-annotations`", project, action, total)
        return JSONResponse({"recorded": action, "annotation_events": total}, status_code=201)

    return router


def create_backend(
    source: ModelSource | str, serve: ServeParams, studio: LabelStudio, label_map: dict | None = None
) -> FastAPI:
    """The service (`segflow.serving.app.create_app`) with the ML backend protocol under `PREFIX`."""
    app = create_app(source, serve)
    app.include_router(labelstudio_routes(app, serve, studio, label_map or {}))
    return app
