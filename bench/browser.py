"""Benchmark: the page's in-browser mode (onnxruntime-web) against the server, on the same photos.

`segflow serve`'s app (create_app) on 127.0.0.1 serving MODEL (default the registry's
@champion, whose int8 ONNX file the page loads), driven by Debian's headless Chromium:

  load     first load of the page in a fresh browser context (empty cache) until the
           in-browser model is ready: seconds, and bytes the server sent (all responses);
           then a reload in the same context (the runtime and model come from the cache)
  speed    each photo segmented in the browser (decode excluded: the worker's time from
           pixels to mask), WASM single-thread (?threads=1) and multi-thread (one per
           core, the page cross-origin isolated), against the server's predictor on the
           same decoded photo (working-scale resize, int8 network, resize back; onnxruntime
           with one thread per core); megapixels per second, median of REPEATS (min-max),
           runs interleaved so that the shared machine's noise hits each alike

    python bench/browser.py --out artifacts/bench/browser.json
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import live_server  # noqa: E402 (the tests' uvicorn-in-a-thread helper)

from segflow.config import ServeParams  # noqa: E402
from segflow.serving.app import create_app  # noqa: E402
from segflow.serving.decode import decode_image  # noqa: E402

DATASETS = REPO.parent / "shared" / "datasets"
#: 1.0 MP and 3.7 MP photos (cvat-coins-polygons: see its SOURCE.md).
PHOTOS = [
    DATASETS / "cvat-coins-polygons/data/images/2019-5r-01-1000x1000.jpg",
    DATASETS / "cvat-coins-polygons/data/images/1721770_big.jpg",
]
CHROMIUM = "/usr/bin/chromium"
#: The page's last in-browser mask, in base64.
MASK = """() => { const m = window.segflow.last.mask; let s = "";
  for (let i = 0; i < m.length; i += 32768) s += String.fromCharCode(...m.subarray(i, i + 32768));
  return btoa(s); }"""
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


class _Bytes:
    """ASGI middleware: bytes of every response body the server sends."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app, self.sent = app, 0

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        async def counted(message: dict) -> None:
            if message["type"] == "http.response.body":
                self.sent += len(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, counted if scope["type"] == "http" else send)


def _ready(page, url: str) -> float:
    start = time.perf_counter()
    page.goto(url)
    page.wait_for_function("() => document.body.dataset.browser === 'ready'", timeout=120_000)
    return time.perf_counter() - start


def _segment(page, photo: Path) -> tuple[float, float]:
    """(seconds from pixels to mask, of which the network's) of `photo` in the page."""
    page.get_by_test_id("file").set_input_files(photo)
    page.get_by_test_id("segment").click()
    page.wait_for_function("() => document.body.dataset.state === 'done'", timeout=300_000)
    ms = page.evaluate("() => window.segflow.last.ms")
    return ms["segment"] / 1000, ms["model"] / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/segflow-unet@champion")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--screenshot", type=Path, help="save the page in its in-browser mode here")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{REPO / 'mlflow.db'}")
    from playwright.sync_api import sync_playwright

    counter = _Bytes(create_app(args.model, ServeParams(poll_seconds=0)))
    app = counter.app
    predictor = app.state.holder.current
    images = {photo: decode_image(photo.read_bytes(), 100_000_000, 8) for photo in PHOTOS}
    timings: dict[str, dict[str, list[float]]] = {p.name: {"server": [], "wasm-1": [], "wasm-n": []} for p in PHOTOS}
    network: dict[str, dict[str, list[float]]] = {p.name: {"wasm-1": [], "wasm-n": []} for p in PHOTOS}
    result: dict = {"model": predictor.info.as_dict() | {"loaded_at": None}, "photos": {}}
    with live_server(counter) as url, sync_playwright() as playwright:
        pages, loads, contexts = {}, {}, []
        for mode, query in (("wasm-1", "?threads=1"), ("wasm-n", "")):
            # A profile of its own (a disk cache, as a person's browser has): an incognito
            # context's memory cache keeps no entry as large as the runtime's 15 MB.
            profile = tempfile.mkdtemp(prefix="bench-browser-")
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=ARGS, headless=True, viewport={"width": 1280, "height": 960}
            )
            contexts.append((context, profile))
            page = context.pages[0] if context.pages else context.new_page()
            before = counter.sent
            first = _ready(page, url + query)
            first_bytes = counter.sent - before
            before = counter.sent
            cached = _ready(page, url + query)
            loads[mode] = {
                "threads": page.evaluate("() => window.segflow.load.threads"),
                "first_s": round(first, 2),
                "first_bytes": first_bytes,
                "cached_s": round(cached, 2),
                "cached_bytes": counter.sent - before,
            }
            pages[mode] = page
        agreement = {}
        for photo in PHOTOS:  # warm-up (the first run of each sets up buffers), and the masks compared
            server = predictor.predict(images[photo])
            for mode, page in pages.items():
                _segment(page, photo)
                mine = np.frombuffer(base64.b64decode(page.evaluate(MASK)), np.uint8).reshape(server.shape)
                agreement[f"{photo.name} {mode}"] = round(float((mine == server).mean()), 5)
        for _ in range(args.repeats):
            for photo in PHOTOS:
                timings[photo.name]["server"].append(predictor.predict_timed(images[photo])[1])
                for mode, page in pages.items():
                    seconds, model = _segment(page, photo)
                    timings[photo.name][mode].append(seconds)
                    network[photo.name][mode].append(model)
        if args.screenshot:
            pages["wasm-n"].screenshot(path=str(args.screenshot), full_page=True)
        for context, profile in contexts:
            context.close()
            shutil.rmtree(profile, ignore_errors=True)
    for photo in PHOTOS:
        megapixels = images[photo].shape[0] * images[photo].shape[1] / 1e6
        rows = {}
        for mode, seconds in timings[photo.name].items():
            rates = sorted(megapixels / s for s in seconds)
            rows[mode] = {
                "median_s": round(statistics.median(seconds), 3),
                "mp_per_s": round(statistics.median(rates), 2),
                "range": [round(rates[0], 2), round(rates[-1], 2)],
            }
        for mode, seconds in network[photo.name].items():
            rows[mode]["network_median_s"] = round(statistics.median(seconds), 3)
        result["photos"][photo.name] = {"megapixels": round(megapixels, 2), **rows}
    result["load"] = loads
    result["pixel_agreement_with_server"] = agreement
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(), "repeats": args.repeats}
    result["load_average"] = os.getloadavg()
    text = json.dumps(result, indent=1, default=lambda v: v.tolist() if isinstance(v, np.ndarray) else str(v))
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
