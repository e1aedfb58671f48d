"""The page's in-browser mode: the served model and its runtime, for onnxruntime-web.

The page can segment a photo without sending it: a module worker (static/worker.mjs) runs
the int8 ONNX model with onnxruntime-web (WebAssembly; threads when the page is
cross-origin isolated) through static/segment.mjs, the JavaScript twin of
`segflow.inference.segment`. This module serves what that needs:

    GET /browser/model/<sha256>.onnx   the model's bytes; the name is their digest, so they
                                       are cached for good (ETag, Cache-Control immutable)
    GET /browser/runtime/<digest>/NAME onnxruntime-web's files (`RUNTIME_FILES`), likewise
    GET /browser/worker.mjs, /browser/segment.mjs   the worker and the prediction path

and `describe()` gives what `GET /model` tells the page under ``browser``: whether the mode
is available (and if not, why), the model's version, URL, size and digest, the runtime's
URL, and the *recipe*: every parameter of the prediction path (working long side, tile,
overlap, blending ramps, padding multiple, batch size, the upsampling memory rule, classes
and palette), read from `segflow.inference.segment` and the model file's metadata, so the
JavaScript holds no copy of them.

The model: an ONNX file source is served as it is; a registered version serves its
exported int8 file (tag ``onnx.int8``: `segflow export`), which the server also runs when
int8 is its default. A PyTorch checkpoint has no in-browser mode (the reason says to export).

The runtime: the files of the npm package onnxruntime-web (package.json pins it; `make
install` runs `npm ci`), found in $SEGFLOW_BROWSER_RUNTIME, else
<repository>/node_modules/onnxruntime-web/dist. Nothing is fetched from elsewhere.

Headers: the page and these files get Cross-Origin-Opener-Policy same-origin and
Cross-Origin-Embedder-Policy require-corp (cross-origin isolation, which WebAssembly
threads need; every resource is same-origin); the worker and the runtime's thread script
get `WORKER_CSP`, which adds 'wasm-unsafe-eval' (compiling WebAssembly) to the page's
policy. The page's own policy is unchanged: its worker is a same-origin script.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

import mlflow
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders

from segflow.inference import segment
from segflow.registry import versions

__all__ = [
    "RUNTIME_ENV",
    "RUNTIME_FILES",
    "WORKER_CSP",
    "ISOLATION",
    "runtime_dir",
    "recipe",
    "BrowserRuntime",
    "CrossOriginIsolation",
    "add_browser",
]

log = logging.getLogger(__name__)

#: Environment variable naming onnxruntime-web's dist folder (default: `_DEFAULT_RUNTIME`).
RUNTIME_ENV = "SEGFLOW_BROWSER_RUNTIME"
_DEFAULT_RUNTIME = Path(__file__).resolve().parents[3] / "node_modules" / "onnxruntime-web" / "dist"
#: What the worker loads: the WebAssembly build's API, and the threaded SIMD module it
#: imports (also the script of its threads) with its binary. Name -> media type.
RUNTIME_FILES = {
    "ort.wasm.min.mjs": "text/javascript",
    "ort-wasm-simd-threaded.mjs": "text/javascript",
    "ort-wasm-simd-threaded.wasm": "application/wasm",
}
#: The worker's and the runtime's policy: the page's, plus compiling WebAssembly, and
#: workers (the runtime's threads) from the service itself.
WORKER_CSP = (
    "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
#: Cross-origin isolation (SharedArrayBuffer, hence WebAssembly threads).
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: The page's scripts for the in-browser mode (static/), served under /browser/.
SCRIPTS = ("worker.mjs", "segment.mjs")
_STATIC = Path(__file__).with_name("static")
#: segment.Segmenter pads an image smaller than a tile to a multiple of this (its _ceil32).
_PAD_MULTIPLE = 32
_IMMUTABLE = "public, max-age=31536000, immutable"


def runtime_dir() -> Path:
    """onnxruntime-web's dist folder: $SEGFLOW_BROWSER_RUNTIME, else node_modules'."""
    raw = os.environ.get(RUNTIME_ENV)
    return Path(raw) if raw else _DEFAULT_RUNTIME


def recipe(info: object) -> dict:
    """Every parameter the JavaScript prediction path needs, from `segflow.inference.segment`
    and the served model's `ModelInfo` (long side, tile, classes, palette)."""
    tile = [int(v) for v in info.tile]
    return {
        "long_side": info.long_side,
        "tile": tile,
        "overlap": segment.OVERLAP,
        # Several tiles are always of the model's tile size: their blending ramps, as float32.
        "ramp": [segment._ramp(tile[0]).tolist(), segment._ramp(tile[1]).tolist()],
        "pad_multiple": _PAD_MULTIPLE,
        "batch_size": segment.BATCH_SIZE,
        "upsample_bytes": segment.UPSAMPLE_BYTES,
        "upsample_bytes_per_pixel": segment._UPSAMPLE_BYTES_PER_PIXEL,
        "class_names": list(info.class_names),
        "palette": [list(map(int, colour)) for colour in info.palette],
    }


class BrowserRuntime:
    """onnxruntime-web's files in `folder`, read once; `reason` says why not when absent."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        missing = [name for name in RUNTIME_FILES if not (self.folder / name).is_file()]
        self.files: dict[str, bytes] = {}
        self.version: str | None = None
        self.digest = ""
        self.reason: str | None = None
        if missing:
            self.reason = (
                f"onnxruntime-web is not installed: {self.folder} lacks {missing}; run `make install` "
                f"(npm ci, needs Node.js) or set {RUNTIME_ENV} to its dist folder"
            )
            return
        self.files = {name: (self.folder / name).read_bytes() for name in RUNTIME_FILES}
        digest = hashlib.sha256()
        for name, data in self.files.items():
            digest.update(name.encode() + hashlib.sha256(data).digest())
        self.digest = digest.hexdigest()[:16]
        package = self.folder.parent / "package.json"
        if package.is_file():
            self.version = json.loads(package.read_text()).get("version")

    @property
    def prefix(self) -> str:
        """The URL folder of the files (their digest in it: cached for good)."""
        return f"/browser/runtime/{self.digest}/"


class _ModelBytes:
    """The bytes the browser runs for the holder's current model, found once per model."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self.data: bytes | None = None
        self.digest = ""
        self.reason: str | None = None

    def current(self, info: object) -> None:
        key = (info.source, info.version, info.loaded_at)
        with self._lock:
            if key == self._key:
                return
            try:
                self.data, self.reason = _locate(info), None
            except _NoModel as exc:
                self.data, self.reason = None, str(exc)
            self.digest = hashlib.sha256(self.data).hexdigest() if self.data else ""
            self._key = key


class _NoModel(Exception):
    pass


def _locate(info: object) -> bytes:
    """The ONNX bytes for `info`'s model: the served .onnx file, or a registered version's int8."""
    source = str(info.source)
    if source.startswith("models:/"):
        name, _, number = source.removeprefix("models:/").rpartition("/")
        version = versions.resolve(mlflow.MlflowClient(), name, number)
        exported = versions.onnx_uri(version, "int8")
        if exported is None:
            raise _NoModel(
                f"version {number} of {name!r} has no exported int8 model for the browser: run "
                f"`segflow export --version {number}`"
            )
        with tempfile.TemporaryDirectory(prefix="segflow-browser-") as tmp:
            path = Path(mlflow.artifacts.download_artifacts(artifact_uri=exported[1], dst_path=tmp))
            return path.read_bytes()
    path = Path(source)
    if path.suffix != ".onnx" or not path.is_file():
        raise _NoModel(
            f"the served model ({info.runtime}, {source}) is not an ONNX file: `segflow export` it to run it "
            "in the browser"
        )
    return path.read_bytes()


class CrossOriginIsolation:
    """ASGI middleware: `ISOLATION` headers on the page (/) and under /browser/."""

    def __init__(self, app) -> None:  # noqa: ANN001 (an ASGI app)
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or not (scope["path"] == "/" or scope["path"].startswith("/browser/")):
            return await self.app(scope, receive, send)

        async def add_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ISOLATION.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, add_headers)


def _cached(request: Request, data: bytes, media_type: str, etag: str, cache: str) -> Response:
    """`data` with its ETag, or 304 when the browser already holds it."""
    headers = {"ETag": f'"{etag}"', "Cache-Control": cache}
    if request.headers.get("if-none-match", "").strip() == f'"{etag}"':
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=media_type, headers=headers)


def add_browser(app: FastAPI, holder: object) -> tuple:
    """Add the in-browser mode's routes to `app` for `holder`'s model.

    Returns (describe, policies): the coroutine whose dict `GET /model` reports under
    ``browser``, and the path -> Content-Security-Policy map for `SecurityHeaders`.
    """
    runtime = BrowserRuntime(runtime_dir())
    model = _ModelBytes()
    scripts = {name: (_STATIC / name).read_bytes() for name in SCRIPTS}
    if runtime.reason:
        log.warning("in-browser mode unavailable: %s", runtime.reason)

    async def describe() -> dict:
        info = holder.current.info
        await run_in_threadpool(model.current, info)
        reason = runtime.reason or model.reason
        return {
            "available": reason is None,
            "reason": reason,
            "version": info.version,
            "model_url": f"/browser/model/{model.digest}.onnx" if model.data else None,
            "model_bytes": len(model.data) if model.data else None,
            "model_sha256": model.digest or None,
            "runtime_url": runtime.prefix if not runtime.reason else None,
            "runtime_version": runtime.version,
            "worker_url": "/browser/worker.mjs",
            "recipe": recipe(info),
        }

    @app.get("/browser/model/{name}", include_in_schema=False)
    async def model_file(request: Request, name: str) -> Response:
        await run_in_threadpool(model.current, holder.current.info)
        if model.data is None or name != f"{model.digest}.onnx":
            raise HTTPException(404, f"no model {name!r}: GET /model names the current one under browser.model_url")
        return _cached(request, model.data, "application/octet-stream", model.digest, _IMMUTABLE)

    @app.get("/browser/runtime/{digest}/{name}", include_in_schema=False)
    async def runtime_file(request: Request, digest: str, name: str) -> Response:
        if runtime.reason or digest != runtime.digest or name not in runtime.files:
            raise HTTPException(404, f"no runtime file {digest}/{name}: {runtime.reason or sorted(runtime.files)}")
        return _cached(request, runtime.files[name], RUNTIME_FILES[name], runtime.digest, _IMMUTABLE)

    @app.get("/browser/{name}", include_in_schema=False)
    async def script(request: Request, name: str) -> Response:
        if name not in scripts:
            raise HTTPException(404, f"no script {name!r}: the in-browser mode loads {list(SCRIPTS)}")
        etag = hashlib.sha256(scripts[name]).hexdigest()[:16]
        return _cached(request, scripts[name], "text/javascript; charset=utf-8", etag, "no-cache")

    policies = {f"/browser/{name}": WORKER_CSP for name in SCRIPTS}
    policies.update({runtime.prefix + name: WORKER_CSP for name in runtime.files})
    return describe, policies
