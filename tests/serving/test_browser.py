"""The page's in-browser mode (segflow.serving.browser, static/worker.mjs, static/segment.mjs)
in Debian's Chromium: with /predict blocked, three real photos of different sizes are
segmented by an int8 model running in onnxruntime-web, and their masks agree with the
server's for the same model file; the photo never leaves the page. And, in Node,
segment.mjs's resize equals cv2's (every byte) and its masks segment.py's on real photos.

Needs Debian's chromium (`make browser`) and onnxruntime-web in node_modules (`make
install` runs npm ci); the photos are /work/shared/datasets' via-heads-balloon (see its
SOURCE.md), read where they are. Each missing piece skips the test and says which.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import REPO_ROOT, SERVE_CLASSES, SERVE_PALETTE, live_server
from PIL import Image
from test_page import ARGS, CHROMIUM

from segflow.config import ServeParams
from segflow.export.export import export_onnx
from segflow.export.quantize import quantize_int8
from segflow.runtime.onnx_file import write_metadata
from segflow.serving.app import create_app
from segflow.serving.browser import RUNTIME_FILES, WORKER_CSP, runtime_dir

DATASET = REPO_ROOT.parent / "shared" / "datasets" / "via-heads-balloon"
#: Three sizes: smaller than the working resolution (enlarged), 0.5 MP (shrunk, tiled) and
#: 8 MP (shrunk 6.5x; the logits resized back to 8 MP).
PHOTOS = ["train/3.jpg", "train/1.jpg", "train/19.jpg"]
#: The test model's working resolution and tile: every photo is tiled at that scale.
LONG_SIDE, TILE = 256, 96

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent: `make browser` installs Debian's chromium"
)
needs_runtime = pytest.mark.skipif(
    not all((runtime_dir() / name).is_file() for name in RUNTIME_FILES),
    reason=f"onnxruntime-web is not installed in {runtime_dir()}: `make install` runs npm ci (needs Node.js)",
)
pytestmark = pytest.mark.skipif(not DATASET.is_dir(), reason=f"{DATASET} is absent (the shared real photos)")


class _ColourNet(torch.nn.Module):
    """A small convolutional network with the colour rule's logits, smoothed over 5x5
    pixels, so tiles and their borders matter (a per-pixel model would hide tiling errors)."""

    def __init__(self) -> None:
        super().__init__()
        self.colour = torch.nn.Conv2d(3, 3, 1)
        self.smooth = torch.nn.Conv2d(3, 3, 5, padding=2, groups=3, bias=False)
        with torch.no_grad():
            rule = torch.tensor([[0, 0, 0], [-1, 0, 1], [1, 0, -1]], dtype=torch.float32)
            self.colour.weight[:] = rule[..., None, None]
            self.colour.bias[:] = torch.tensor([48.0, 0.0, 0.0])
            self.smooth.weight[:] = 1 / 25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.smooth(self.colour(x))


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory) -> Path:
    """The colour network exported and quantized to int8 as `segflow export` does it."""
    folder = tmp_path_factory.mktemp("browser-model")
    fp32, int8 = folder / "model.onnx", folder / "model.int8.onnx"
    export_onnx(_ColourNet().eval(), fp32, (TILE, TILE), "torchscript")
    rng = np.random.default_rng(0)
    calibration = []
    for name in PHOTOS[:2]:
        photo = np.asarray(Image.open(DATASET / name).convert("RGB"))
        for _ in range(4):
            y, x = (rng.integers(0, max(1, s - TILE)) for s in photo.shape[:2])
            tile = np.zeros((TILE, TILE, 3), np.uint8)
            crop = photo[y : y + TILE, x : x + TILE]
            tile[: crop.shape[0], : crop.shape[1]] = crop
            calibration.append(tile)
    quantize_int8(fp32, int8, np.stack(calibration))
    write_metadata(
        int8,
        {
            "name": "colour-net",
            "version": "3",
            "class_names": SERVE_CLASSES,
            "palette": SERVE_PALETTE,
            "long_side": LONG_SIDE,
            "tile": [TILE, TILE],
            "ignore_index": 255,
            "variant": "int8",
            "test_miou": 0.5,
        },
    )
    return int8


#: The page's last in-browser result, its mask in base64.
MASK_OF_THE_PAGE = """() => {
  const r = window.segflow.last;
  let s = "";
  for (let i = 0; i < r.mask.length; i += 32768) s += String.fromCharCode(...r.mask.subarray(i, i + 32768));
  return {width: r.width, height: r.height, mask: btoa(s), shares: r.classes.map(c => c.share)};
}"""


#: What the page may GET besides itself (/): its scripts and styles, /model, the runtime and the model.
PAGE_PATHS = ("/static/", "/model", "/browser/")


class _Recorder:
    """ASGI middleware: every request the server receives, with its body's size."""

    def __init__(self, app) -> None:  # noqa: ANN001 (an ASGI app)
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        entry = {"method": scope["method"], "path": scope["path"], "query": scope["query_string"], "body": 0}
        self.seen.append(entry)

        async def counted() -> dict:
            message = await receive()
            entry["body"] += len(message.get("body", b""))
            return message

        await self.app(scope, counted, send)


def _server_mask(url: str, path: Path) -> np.ndarray:
    import httpx

    answer = httpx.post(f"{url}/predict", content=path.read_bytes(), timeout=120)
    assert answer.status_code == 200, answer.text
    return np.asarray(Image.open(io.BytesIO(answer.content)))


@needs_chromium
@needs_runtime
def test_the_page_segments_in_the_browser_as_the_server_does(int8_model):
    from playwright.sync_api import expect, sync_playwright

    recorder = _Recorder(create_app(int8_model, ServeParams(poll_seconds=0)))
    sent, blocked, refused = [], [], []
    with live_server(recorder) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 960})
            page.on("request", lambda request: sent.append((request.method, request.url, request.post_data_buffer)))
            page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
            page.route("**/predict*", lambda route: (blocked.append(route.request.url), route.abort()))
            answer = page.goto(url)
            assert answer.headers["cross-origin-embedder-policy"] == "require-corp"
            expect(page.get_by_test_id("mode-browser")).to_be_checked()
            expect(page.get_by_test_id("mode-note")).to_contain_text("The photo is not sent")
            expect(page.locator("body")).to_have_attribute("data-browser", "ready", timeout=60_000)
            load = page.evaluate("() => window.segflow.load")
            assert load["isolated"] is True and load["threads"] >= 1, load  # COOP + COEP: threads allowed
            for name in PHOTOS:
                photo = DATASET / name
                page.get_by_test_id("file").set_input_files(photo)
                page.get_by_test_id("segment").click()
                expect(page.locator("body")).to_have_attribute("data-state", "done", timeout=60_000)
                expect(page.get_by_test_id("status")).to_contain_text("in this browser")
                result = page.evaluate(MASK_OF_THE_PAGE)
                mine = np.frombuffer(base64.b64decode(result["mask"]), np.uint8).reshape(result["height"], -1)
                theirs = _server_mask(url, photo)
                assert mine.shape == theirs.shape == np.asarray(Image.open(photo)).shape[:2], name
                agreement = float((mine == theirs).mean())
                server_shares = np.bincount(theirs.ravel(), minlength=3) / theirs.size
                assert agreement >= 0.995, (name, agreement)
                assert np.abs(np.array(result["shares"]) - server_shares).max() <= 0.005, (name, result["shares"])
                assert len(set(np.unique(theirs).tolist())) >= 2, name  # a mask, not one class everywhere
                print(f"{name}: {mine.shape[1]}x{mine.shape[0]}, agreement {agreement:.5f}")
            # The result is on screen: the mask at the photo's size, and the legend.
            size = page.eval_on_selector("#mask", "m => [m.naturalWidth, m.naturalHeight]")
            assert size == [mine.shape[1], mine.shape[0]]
            expect(page.locator("#legend li")).to_have_count(len(SERVE_CLASSES))
        finally:
            browser.close()
    photos = [(DATASET / name).read_bytes() for name in PHOTOS]
    # Nothing reached /predict from the page, and no request of the page carried a body.
    assert blocked == []
    assert [entry for entry in recorder.seen if entry["method"] != "GET" and entry["path"] != "/predict"] == []
    page_bodies = [(method, url) for method, url, body in sent if body]
    assert page_bodies == [], page_bodies
    for _, _, body in sent:
        assert body is None or not any(photo[:4096] in body for photo in photos)
    # The server saw the photos only from the test's own POSTs (one per photo), and the page's GETs.
    posts = [entry for entry in recorder.seen if entry["method"] == "POST"]
    assert [entry["body"] for entry in posts] == [len(photo) for photo in photos]
    gets = [entry for entry in recorder.seen if entry["method"] == "GET"]
    strays = [e for e in gets if e["query"] or not (e["path"] == "/" or e["path"].startswith(PAGE_PATHS))]
    assert strays == []
    assert any(entry["path"].startswith("/browser/model/") for entry in gets)
    assert refused == []


@needs_runtime
def test_model_route_is_cached_by_digest_and_the_worker_may_compile_wasm(int8_model):
    from starlette.testclient import TestClient

    with TestClient(create_app(int8_model, ServeParams(poll_seconds=0)), base_url="http://127.0.0.1") as client:
        browser = client.get("/model").json()["browser"]
        assert browser["available"] is True and browser["version"] == "3"
        recipe = browser["recipe"]
        assert recipe["long_side"] == LONG_SIDE and recipe["tile"] == [TILE, TILE]
        assert recipe["palette"] == SERVE_PALETTE and len(recipe["ramp"][0]) == TILE
        model = client.get(browser["model_url"])
        assert model.content == int8_model.read_bytes()
        assert "immutable" in model.headers["cache-control"]
        again = client.get(browser["model_url"], headers={"if-none-match": model.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert client.get("/browser/model/0000.onnx").status_code == 404
        worker = client.get(browser["worker_url"])
        assert worker.headers["content-security-policy"] == WORKER_CSP
        assert worker.headers["content-type"].startswith("text/javascript")
        wasm = client.get(browser["runtime_url"] + "ort-wasm-simd-threaded.wasm")
        assert wasm.headers["content-type"] == "application/wasm" and wasm.content[:4] == b"\0asm"
        assert client.get(browser["runtime_url"] + "ort.all.min.mjs").status_code == 404  # only what it loads
        page = client.get("/")
        assert "'wasm-unsafe-eval'" not in page.headers["content-security-policy"]  # the page itself compiles nothing
        assert page.headers["cross-origin-opener-policy"] == "same-origin"


def test_without_the_runtime_the_page_says_why_and_keeps_the_server_mode(int8_model, tmp_path, monkeypatch):
    from starlette.testclient import TestClient

    monkeypatch.setenv("SEGFLOW_BROWSER_RUNTIME", str(tmp_path / "nowhere"))
    with TestClient(create_app(int8_model, ServeParams(poll_seconds=0)), base_url="http://127.0.0.1") as client:
        browser = client.get("/model").json()["browser"]
        assert browser["available"] is False and "make install" in browser["reason"]
        assert browser["runtime_url"] is None
        assert client.post("/predict", content=(DATASET / PHOTOS[0]).read_bytes()).status_code == 200


@needs_chromium
@needs_runtime
def test_the_switch_sends_the_photo_to_the_server_only_when_asked(int8_model):
    from playwright.sync_api import expect, sync_playwright

    recorder = _Recorder(create_app(int8_model, ServeParams(poll_seconds=0)))
    photo = DATASET / PHOTOS[1]
    with live_server(recorder) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("body")).to_have_attribute("data-browser", "ready", timeout=60_000)
            page.get_by_test_id("mode-server").check()
            expect(page.get_by_test_id("mode-note")).to_contain_text("The photo is sent to the service")
            page.get_by_test_id("file").set_input_files(photo)
            page.get_by_test_id("segment").click()
            expect(page.locator("body")).to_have_attribute("data-state", "done", timeout=60_000)
            expect(page.get_by_test_id("status")).to_contain_text("on the server")
            # Back to the browser: the next photo stays here.
            page.get_by_test_id("mode-browser").check()
            page.get_by_test_id("segment").click()
            expect(page.get_by_test_id("status")).to_contain_text("in this browser", timeout=60_000)
        finally:
            browser.close()
    posts = [entry for entry in recorder.seen if entry["method"] == "POST"]
    assert [entry["path"] for entry in posts] == ["/predict"]  # one upload: the server-mode one
    assert posts[0]["body"] > len(photo.read_bytes())  # the photo, in a multipart form


NODE = shutil.which("node")
#: Node runs segment.mjs on raw files: the rescaled photo, and the mask of a per-pixel rule.
_NODE_CHECK = """
import fs from "fs";
import { rescale, predict } from "%s";
const f32 = Math.fround;
const c = JSON.parse(fs.readFileSync("case.json"));
const src = new Uint8Array(fs.readFileSync("photo.raw"));
fs.writeFileSync("scaled.raw", rescale(src, c.h, c.w, c.scale).rgb);
const run = async (batch, n, th, tw) => {
  const plane = th * tw, out = new Float32Array(n * 3 * plane);
  for (let k = 0; k < n; k++) for (let j = 0; j < plane; j++) {
    const r = batch[k * 3 * plane + j], b = batch[k * 3 * plane + 2 * plane + j];
    const o = k * 3 * plane + j;
    out[o] = 48.5; out[o + plane] = f32(b - r); out[o + 2 * plane] = f32(r - b);
  }
  return out;
};
fs.writeFileSync("mask.raw", await predict(src, c.h, c.w, c.recipe, run));
"""


@pytest.mark.skipif(NODE is None, reason="node is absent: `make install` needs Node.js for the in-browser mode")
@pytest.mark.parametrize(
    ("name", "long_side", "tile"),
    [("train/1.jpg", 320, (128, 96)), ("train/1.jpg", 400, (160, 160)), ("train/3.jpg", 320, (96, 96))],
    ids=["shrink 0.4, tiles", "shrink 1/2 exactly", "enlarge 2.6"],
)
def test_segment_mjs_resizes_and_blends_as_segment_py(name, long_side, tile, tmp_path):
    from segflow.inference.segment import Segmenter, rescale, working_factor
    from segflow.serving.browser import recipe

    def rule(batch: np.ndarray) -> np.ndarray:
        red, blue = batch[:, 0:1], batch[:, 2:3]
        return np.concatenate([np.full_like(red, 48.5), blue - red, red - blue], 1)

    photo = np.asarray(Image.open(DATASET / name).convert("RGB"))
    height, width = photo.shape[:2]
    scale = working_factor(height, width, long_side)
    info = SimpleNamespace(long_side=long_side, tile=tile, class_names=SERVE_CLASSES, palette=SERVE_PALETTE)
    (tmp_path / "case.json").write_text(json.dumps({"h": height, "w": width, "scale": scale, "recipe": recipe(info)}))
    photo.tofile(tmp_path / "photo.raw")
    script = tmp_path / "check.mjs"
    script.write_text(_NODE_CHECK % (REPO_ROOT / "src/segflow/serving/static/segment.mjs").as_uri())
    subprocess.run([NODE, str(script)], cwd=tmp_path, check=True, timeout=120)
    scaled = rescale(photo, scale)
    assert np.array_equal(np.fromfile(tmp_path / "scaled.raw", np.uint8).reshape(scaled.shape), scaled)
    mask = Segmenter(rule, long_side, tile).predict_one(photo)
    mine = np.fromfile(tmp_path / "mask.raw", np.uint8).reshape(mask.shape)
    # 48.5: no exact ties between classes at working-scale pixels; what is left is float32
    # rounding of the bilinear logits where two classes nearly tie (OpenCV's vector code
    # rounds in its own order): under 0.01% of pixels (measured: at most 0.005%).
    assert (mine != mask).mean() <= 1e-4


@pytest.mark.slow
def test_a_registered_champion_gives_the_browser_its_int8_file(
    register_version, registry_params, frozen_split, tmp_path
):
    import mlflow
    from starlette.testclient import TestClient

    from segflow.export import export
    from segflow.registry.register import move_champion

    first = register_version(1)
    export.export_version(
        registry_params, frozen_split / "preprocess", exporter="torchscript"
    )  # the fast one: test_export.py checks both
    int8 = mlflow.artifacts.download_artifacts(
        mlflow.MlflowClient().get_model_version("tiny", first).tags["onnx.int8"], dst_path=str(tmp_path / "int8")
    )
    second = register_version(2)  # not exported: served with PyTorch, nothing for the browser
    app = create_app("models:/tiny@champion", ServeParams(poll_seconds=0))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        browser = client.get("/model").json()["browser"]
        assert browser["version"] == first and browser["model_bytes"] == Path(int8).stat().st_size
        assert client.get(browser["model_url"]).content == Path(int8).read_bytes()
        move_champion(mlflow.MlflowClient(), "tiny", second, expected=first)
        assert client.post("/reload").json()["reloaded"] is True
        browser = client.get("/model").json()["browser"]
        assert browser["available"] is False and browser["model_url"] is None
        assert f"segflow export --version {second}" in browser["reason"]
