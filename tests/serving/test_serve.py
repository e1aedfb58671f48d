"""segflow.serving: the API on a model whose masks are known in advance (the colour rule),
every bad input, 8 concurrent clients, and @champion served from an MLflow registry,
exported to ONNX and swapped when the alias moves, with requests in flight."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import socket
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from helpers import SERVE_CLASSES, SERVE_PALETTE, SERVE_SIZE, colour_rule_mask, live_server, scene
from PIL import Image

from segflow.config import ServeParams
from segflow.data.records import Region
from segflow.errors import ConfigError
from segflow.inference.segment import Segmenter
from segflow.runtime.onnx_file import read_metadata, write_metadata
from segflow.runtime.predictor import ModelInfo, Predictor
from segflow.runtime.source import ModelSource
from segflow.serving.app import create_app
from segflow.serving.decode import InputError, decode_image

#: Limits of the test service: small, so the refusals are cheap to provoke.
LIMITS = ServeParams(max_upload_bytes=1_000_000, max_pixels=1_000_000, min_side=8, poll_seconds=0)
#: What the test clients send as Host: a loopback name, as a browser on this machine does.
BASE_URL = "http://localhost"


def serve_params(**changes) -> ServeParams:
    """LIMITS with `changes`, validated as params.yaml would be."""
    return ServeParams.model_validate({**LIMITS.model_dump(), **changes})


def encode(image: np.ndarray, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, fmt, **options)
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height, with almost no pixel data behind it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def mask_of(response: httpx.Response) -> np.ndarray:
    """Class indices of a /predict PNG (a palette PNG: values are indices)."""
    image = Image.open(io.BytesIO(response.content))
    assert image.mode == "P"
    return np.array(image)


def samples(text: str) -> dict[tuple, float]:
    """/metrics text parsed as a scraper does: {(sample name, *sorted label pairs): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((a == b).mean())


@pytest.fixture(scope="module")
def app(colour_rule_onnx):
    return create_app(colour_rule_onnx, LIMITS)


@pytest.fixture(scope="module")
def client(app):
    with TestClient(app, base_url=BASE_URL) as client:
        yield client


def test_png_mask_is_at_the_input_size_and_follows_the_model(client):
    image = scene(150, 230)  # not square, not the model's 64 px
    response = client.post("/predict", content=encode(image), headers={"content-type": "image/png"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-model-version"] == "7"
    mask = mask_of(response)
    assert mask.shape == (150, 230)
    # At its own size in 64 px tiles, blended: a per-pixel rule comes back exactly.
    assert agreement(mask, colour_rule_mask(image)) > 0.999
    palette = Image.open(io.BytesIO(response.content)).getpalette()[: 3 * len(SERVE_CLASSES)]
    assert palette == [c for colour in SERVE_PALETTE for c in colour]


def test_json_gives_shares_and_polygons_that_repaint_the_mask(client):
    image = scene(120, 200)
    response = client.post(
        "/predict?format=json&polygons=true&mask=true&simplify=0",
        files={"file": ("street.png", encode(image), "image/png")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (200, 120)
    assert body["model"] == {"name": "colour-rule", "version": "7", "runtime": "onnx-fp32"}
    truth = colour_rule_mask(image)
    for entry in body["classes"]:
        assert entry["name"] == SERVE_CLASSES[entry["index"]]
        assert entry["share"] == pytest.approx((truth == entry["index"]).mean(), abs=0.02)
    assert sum(entry["pixels"] for entry in body["classes"]) == 200 * 120
    mask = np.array(Image.open(io.BytesIO(base64.b64decode(body["mask_png"].split(",", 1)[1]))))
    # The regions are canonical records; painted in order they give the mask back.
    from segflow.data.draw import paint_region

    regions = [Region(r["label"], r["shape"], tuple(map(tuple, r["points"]))) for r in body["regions"]]
    assert {r.label for r in regions} == set(SERVE_CLASSES)
    assert all(r.shape == "polygon" and len(r.points) >= 3 for r in regions)
    painted = np.full(mask.shape, 255, np.uint8)
    for region in regions:
        paint_region(painted, region, SERVE_CLASSES.index(region.label))
    assert agreement(painted, mask) > 0.995


def test_the_service_predicts_through_the_one_inference_path():
    """The service runs `segflow.inference.segment.Segmenter`, as evaluation does: the
    same tiles reach the network, and the same mask comes back."""
    seen = []

    def run(batch: np.ndarray) -> np.ndarray:
        seen.append(batch)
        return np.stack([batch[:, 0], batch[:, 2]], 1)  # red vs blue

    info = ModelInfo("m", "1", None, "test", ["a", "b"], [[0, 0, 0], [1, 1, 1]], 35, [32, 32], 0)  # half of 70
    image = np.random.default_rng(0).integers(0, 255, (45, 70, 3), dtype=np.uint8)
    served = Predictor(run, info).predict(image)
    tiles = list(seen)
    seen.clear()
    direct = Segmenter(run, 35, (32, 32)).predict_one(image)
    assert served.shape == (45, 70)
    np.testing.assert_array_equal(served, direct)
    assert len(tiles) == len(seen) and all(np.array_equal(a, b) for a, b in zip(tiles, seen))


def test_model_health_and_metrics(client):
    model = client.get("/model").json()
    assert model["name"] == "colour-rule" and model["version"] == "7" and model["runtime"] == "onnx-fp32"
    assert model["class_names"] == SERVE_CLASSES and model["palette"] == SERVE_PALETTE
    assert model["long_side"] is None and model["tile"] == [SERVE_SIZE, SERVE_SIZE]
    assert model["metrics"]["test_miou"] == 0.5
    assert client.get("/health").json()["status"] == "ok"
    client.post("/predict", content=encode(scene(40, 40)))
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = samples(metrics.text)
    assert found["segflow_requests_total", ("method", "POST"), ("route", "/predict"), ("status", "200")] >= 1
    assert found["segflow_request_duration_seconds_bucket", ("le", "+Inf"), ("route", "/predict")] >= 1
    assert found["segflow_inference_duration_seconds_count", ("runtime", "onnx-fp32")] >= 1
    assert found["segflow_model_info", ("name", "colour-rule"), ("runtime", "onnx-fp32"), ("version", "7")] == 1
    assert found["segflow_model_reloads_total",] == 0
    assert found["segflow_upload_bytes_in_progress",] == 0


def test_metrics_escape_label_values_and_negotiate_the_format(colour_rule_onnx, tmp_path):
    """A model name with a quote, a backslash and a newline reads back intact."""
    odd = tmp_path / "odd.onnx"
    shutil.copy(colour_rule_onnx, odd)
    name = 'colour "rule" \\ v2\nsecond line'
    write_metadata(odd, {**read_metadata(odd), "name": name})
    # A second app in this process: each has its own registry, so nothing clashes.
    with TestClient(create_app(odd, LIMITS), base_url=BASE_URL) as client:
        assert client.post("/predict", content=encode(scene(40, 40))).status_code == 200
        response = client.get("/metrics")
        openmetrics = client.get("/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    found = samples(response.text)
    assert [labels for name, *labels in found if name == "segflow_model_info"] == [
        [("name", name), ("runtime", "onnx-fp32"), ("version", "7")]
    ]
    assert found["segflow_model_info", ("name", name), ("runtime", "onnx-fp32"), ("version", "7")] == 1
    assert found["segflow_requests_total", ("method", "POST"), ("route", "/predict"), ("status", "200")] == 1
    assert found["segflow_inference_duration_seconds_count", ("runtime", "onnx-fp32")] == 1
    assert found["segflow_inference_duration_seconds_bucket", ("le", "+Inf"), ("runtime", "onnx-fp32")] == 1
    assert found["segflow_model_reloads_total",] == 0
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert openmetrics.text.endswith("# EOF\n")


def _truncated_jpeg() -> bytes:
    data = encode(scene(200, 200), "JPEG", quality=90)
    return data[: len(data) // 2]


def _bad_crc_png() -> bytes:
    """A valid 30x30 PNG with one bit of its IHDR checksum flipped (bytes 29-32)."""
    data = bytearray(encode(scene(30, 30)))
    data[32] ^= 1
    return bytes(data)


def _multipart(content: bytes, name: str = "photo.png") -> dict:
    return {"files": {"file": (name, content, "application/octet-stream")}}


BAD_INPUTS = {
    "not an image": ({"content": b"hello, I am a text file, not a photo\n" * 20}, 415, "not an image"),
    "not an image (multipart)": (_multipart(b"%PDF-1.7 not a photo"), 415, "not an image"),
    "a GIF": ({"content": encode(scene(20, 20), "GIF")}, 415, "not an image"),
    "a truncated JPEG": ({"content": _truncated_jpeg()}, 422, "truncated"),
    "an empty body": ({"content": b""}, 400, "empty body"),
    "an empty file part": (_multipart(b""), 400, "empty body"),
    "a form without a file": (
        {"data": {"note": "no file"}, "files": {"x": ("", b"", "text/plain")}},
        422,
        "no file in the field 'file'",
    ),
    "a file in another field": (
        {"files": {"photo": ("street.png", encode(scene(30, 30)), "image/png")}},
        422,
        "send the image as the field 'file'",
    ),
    "a PNG whose header checksum is bad": ({"content": _bad_crc_png()}, 422, "corrupt PNG"),
    "a body over the limit": ({"content": b"\x89PNG" + bytes(1_000_000)}, 413, "upload limit"),
    "a chunked body over the limit": ({"content": iter([bytes(400_000)] * 3)}, 413, "upload limit"),
    "a decompression bomb": ({"content": encode(np.zeros((2000, 2000), np.uint8))}, 413, "pixels"),
    "a 10-gigapixel header": ({"content": png_header_only(100_000, 100_000)}, 413, ""),
    "a 1x1 image": ({"content": encode(np.zeros((1, 1, 3), np.uint8))}, 422, "at least 8"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_a_clear_4xx_and_the_service_keeps_serving(client, case):
    request, status, words = BAD_INPUTS[case]
    response = client.post("/predict", **request)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert client.post("/predict", content=encode(scene(30, 30))).status_code == 200


def test_bomb_is_refused_before_decoding():
    # 100000 x 100000 x 3 bytes would be 30 GB: only the header may be read.
    with pytest.raises(InputError) as refused:
        decode_image(png_header_only(100_000, 100_000), max_pixels=50_000_000, min_side=8)
    assert refused.value.status == 413


def _rgba(image: np.ndarray) -> np.ndarray:
    alpha = np.random.default_rng(0).integers(0, 255, image.shape[:2], dtype=np.uint8)
    return np.dstack([image, alpha])


def _sixteen_bit_rgb(image: np.ndarray) -> bytes:
    import cv2

    ok, data = cv2.imencode(".png", (image[:, :, ::-1].astype(np.uint16) * 257))
    return data.tobytes()


CONVERTED = {
    # name: (file bytes, what the service should see as RGB)
    "16-bit RGB PNG": (_sixteen_bit_rgb(scene(60, 90)), scene(60, 90)),
    "RGBA PNG": (encode(_rgba(scene(60, 90))), scene(60, 90)),
    "palette PNG": (encode(np.array(Image.fromarray(scene(60, 90)).convert("P"))), None),
    "grayscale PNG": (encode(np.full((60, 90), 200, np.uint8)), np.full((60, 90, 3), 200, np.uint8)),
    "16-bit grayscale PNG": (encode(np.full((60, 90), 51400, np.uint16)), np.full((60, 90, 3), 200, np.uint8)),
}


@pytest.mark.parametrize("case", CONVERTED, ids=list(CONVERTED))
def test_other_pixel_formats_become_8_bit_rgb(client, case):
    data, expected = CONVERTED[case]
    decoded = decode_image(data, max_pixels=10**6, min_side=8)
    assert decoded.dtype == np.uint8 and decoded.shape == (60, 90, 3)
    if expected is not None:
        np.testing.assert_array_equal(decoded, expected)
    response = client.post("/predict", content=data)
    assert response.status_code == 200, response.text
    assert agreement(mask_of(response), colour_rule_mask(decoded)) > 0.97


def test_exif_orientation_is_applied(client):
    """A phone photo stored sideways: the mask matches the picture as a browser shows it."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    stored = scene(100, 160)
    response = client.post("/predict", content=encode(stored, "JPEG", quality=95, exif=exif))
    assert response.status_code == 200
    shown = np.rot90(stored, k=-1)
    assert agreement(mask_of(response), colour_rule_mask(shown)) > 0.95


def test_upload_limit_from_the_environment(colour_rule_onnx, monkeypatch):
    monkeypatch.setenv("SEGFLOW_MAX_UPLOAD_BYTES", "1000")
    with TestClient(create_app(colour_rule_onnx, LIMITS), base_url=BASE_URL) as small:
        noise = np.random.default_rng(0).integers(0, 255, (100, 100, 3), dtype=np.uint8)  # 30 kB as PNG
        response = small.post("/predict", content=encode(noise))
    assert response.status_code == 413 and "SEGFLOW_MAX_UPLOAD_BYTES" in response.json()["detail"]
    monkeypatch.setenv("SEGFLOW_MAX_UPLOAD_BYTES", "lots")
    with pytest.raises(ConfigError, match="SEGFLOW_MAX_UPLOAD_BYTES"):
        create_app(colour_rule_onnx, LIMITS)


def test_eight_concurrent_clients_get_no_5xx(app):
    image = scene(180, 240)
    good, truth = encode(image, "JPEG", quality=92), colour_rule_mask(image)
    bad = [b"", b"not an image", _truncated_jpeg()]

    def client_session(index: int) -> list[int]:
        statuses = []
        with httpx.Client(base_url=url, timeout=60) as http:
            for round_ in range(6):
                if round_ % 3 == 2:
                    statuses.append(http.post("/predict", content=bad[(index + round_) % 3]).status_code)
                    continue
                response = http.post("/predict", files={"file": ("a.jpg", good, "image/jpeg")})
                statuses.append(response.status_code)
                if response.status_code == 200:
                    assert agreement(mask_of(response), truth) > 0.95
        return statuses

    with live_server(app) as url, ThreadPoolExecutor(8) as pool:
        statuses = [s for result in pool.map(client_session, range(8)) for s in result]
        metrics = httpx.get(f"{url}/metrics").text
    assert len(statuses) == 48
    assert statuses.count(200) == 32 and all(400 <= s < 500 for s in statuses if s != 200)
    assert 'status="5' not in metrics


@pytest.mark.parametrize("content_type", ["image/png", "multipart/form-data; boundary=xyz"])
def test_an_aborted_upload_counts_as_499_without_a_traceback(app, caplog, content_type):
    """A client that hangs up mid-body is the client's doing: 499, not a 500 with a traceback."""
    caplog.set_level(logging.INFO, logger="segflow")
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\nContent-Length: 500000\r\n\r\n"
    ).encode()
    part = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    with live_server(app) as url:
        # uvicorn's logger does not propagate to the root logger that caplog listens on.
        uvicorn_log = logging.getLogger("uvicorn.error")
        uvicorn_log.addHandler(caplog.handler)
        try:
            server = httpx.URL(url)
            with socket.create_connection((server.host, server.port)) as sock:
                sock.sendall(head + (part if content_type.startswith("multipart") else b"") + bytes(20_000))
                time.sleep(0.3)  # the service is waiting for the other 480 kB
            deadline, metrics = time.monotonic() + 20, ""
            while 'status="499"' not in metrics and time.monotonic() < deadline:
                time.sleep(0.05)
                metrics = httpx.get(f"{url}/metrics").text
        finally:
            uvicorn_log.removeHandler(caplog.handler)
    assert 'segflow_requests_total{method="POST",route="/predict",status="499"}' in metrics
    assert 'status="500"' not in metrics
    assert [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING] == []
    assert not any("Traceback" in line for line in caplog.text.splitlines())
    assert any("499" in r.getMessage() for r in caplog.records if r.name.startswith("segflow"))


@pytest.mark.slow  # a fresh interpreter imports torch, MLflow and FastAPI
def test_segflow_serve_command(colour_rule_onnx):
    """`segflow serve --onnx FILE` answers on the port it is given."""
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-c",
        "from segflow.cli import main; main()",
        "serve",
        "--onnx",
        str(colour_rule_onnx),
        "--port",
        str(port),
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and server.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health")
                break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            pytest.fail(f"segflow serve did not answer: {server.communicate(timeout=5)[0][-2000:]}")
        assert health.json()["model"] == {"name": "colour-rule", "version": "7", "runtime": "onnx-fp32"}
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("fix", ["champion moved back", "a new model"])
def test_a_reload_that_succeeds_clears_the_last_error(colour_rule_onnx, tmp_path, fix):
    served = tmp_path / "model.onnx"
    shutil.copy2(colour_rule_onnx, served)
    good, loaded = served.read_bytes(), served.stat()
    with TestClient(create_app(served, LIMITS), base_url=BASE_URL) as client:
        served.write_bytes(b"not an ONNX model")  # a broken model replaces the served one
        assert client.post("/reload").status_code == 503
        assert "model.onnx" in client.get("/health").json()["last_reload_error"]
        served.write_bytes(good)
        if fix == "champion moved back":  # the source names the model being served again
            os.utime(served, ns=(loaded.st_atime_ns, loaded.st_mtime_ns))
        else:
            os.utime(served, ns=(loaded.st_atime_ns, loaded.st_mtime_ns + 10**9))
        response = client.post("/reload")
        assert response.status_code == 200 and response.json()["reloaded"] is (fix == "a new model")
        health = client.get("/health").json()
    assert health["last_reload_error"] is None and health["model"]["version"] == "7"


def test_reload_on_loopback_needs_no_token(colour_rule_onnx, monkeypatch):
    monkeypatch.delenv("SEGFLOW_SERVE_TOKEN", raising=False)
    with TestClient(create_app(colour_rule_onnx, LIMITS), base_url=BASE_URL) as client:
        response = client.post("/reload")
    assert response.status_code == 200 and response.json()["reloaded"] is False


def test_reload_beyond_loopback_without_a_token_is_refused(colour_rule_onnx, monkeypatch):
    monkeypatch.delenv("SEGFLOW_SERVE_TOKEN", raising=False)
    with TestClient(create_app(colour_rule_onnx, serve_params(host="0.0.0.0")), base_url=BASE_URL) as client:
        response = client.post("/reload", headers={"authorization": "Bearer anything"})
        assert client.get("/health").status_code == 200  # reading stays open
    assert response.status_code == 403 and "SEGFLOW_SERVE_TOKEN" in response.json()["detail"]


def test_reload_beyond_loopback_takes_only_the_token(colour_rule_onnx, monkeypatch):
    monkeypatch.setenv("SEGFLOW_SERVE_TOKEN", "s3cret-token")
    with TestClient(create_app(colour_rule_onnx, serve_params(host="0.0.0.0")), base_url=BASE_URL) as client:
        missing = client.post("/reload")
        wrong = client.post("/reload", headers={"authorization": "Bearer s3cret-tokeN"})
        not_bearer = client.post("/reload", headers={"authorization": "Basic s3cret-token"})
        right = client.post("/reload", headers={"authorization": "Bearer s3cret-token"})
    for refused in (missing, wrong, not_bearer):
        assert refused.status_code == 401, refused.text
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "SEGFLOW_SERVE_TOKEN" in refused.json()["detail"]
    assert right.status_code == 200 and right.json()["reloaded"] is False


@pytest.mark.parametrize(
    "host, allowed, answers",
    [
        (
            "127.0.0.1",
            None,
            {
                "localhost": 200,
                "127.0.0.1:8000": 200,
                "[::1]:8000": 200,
                "LOCALHOST": 200,
                "evil.example": 400,
                "127.0.0.1.evil.example": 400,
                "": 400,
            },
        ),
        ("10.1.2.3", None, {"10.1.2.3:8000": 200, "localhost": 200, "10.1.2.4": 400}),
        ("0.0.0.0", ["seg.example.com"], {"seg.example.com": 200, "SEG.example.com:443": 200, "localhost": 400}),
        ("0.0.0.0", ["*"], {"anything.example": 200, "10.9.8.7:8000": 200}),
    ],
)
def test_the_host_header_must_be_allowed(colour_rule_onnx, host, allowed, answers):
    """DNS rebinding: a page on another site must not reach the service by its name."""
    changes = {"host": host} if allowed is None else {"host": host, "allowed_hosts": allowed}
    with TestClient(create_app(colour_rule_onnx, serve_params(**changes)), base_url=BASE_URL) as client:
        for header, status in answers.items():
            response = client.get("/health", headers={"host": header})
            assert response.status_code == status, (header, response.text)
            if status == 400:
                name = header.split(":")[0].lower()
                assert f"Host header '{name}' is not in serve.allowed_hosts" in response.json()["detail"]


def test_allowed_hosts_are_names_not_urls():
    with pytest.raises(ValueError, match="allowed_hosts"):
        ServeParams(allowed_hosts=["http://seg.example.com:8000"])


#: The headers every response carries, exactly (segflow.serving.security).
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def test_every_response_carries_the_security_headers(client):
    page = client.get("/")
    responses = {
        "page": page,
        "script": client.get("/static/page.js"),
        "styles": client.get("/static/page.css"),
        "model": client.get("/model"),
        "metrics": client.get("/metrics"),
        "predict": client.post("/predict", content=encode(scene(30, 30))),
        "bad input": client.post("/predict", content=b"not a photo"),
        "unknown path": client.get("/nowhere"),
        "refused host": client.get("/health", headers={"host": "evil.example"}),
    }
    for name, response in responses.items():
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, (name, header)
    # The policy allows no inline code: the page has none, its script and styles are files.
    assert "<script>" not in page.text and "<style>" not in page.text and "style=" not in page.text
    assert '<script src="/static/page.js" defer></script>' in page.text
    assert responses["script"].headers["content-type"] == "text/javascript; charset=utf-8"
    assert "async function segment()" in responses["script"].text
    assert responses["styles"].headers["content-type"] == "text/css; charset=utf-8"
    assert client.get("/static/index.html").status_code == 404
    assert client.get("/static/../app.py").status_code == 404


def test_head_of_the_page_is_its_headers_without_a_body(client):
    head, get = client.head("/"), client.get("/")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"] == "text/html; charset=utf-8"
    assert int(head.headers["content-length"]) == len(get.content) > 1000
    assert head.headers["content-security-policy"] == SECURITY_HEADERS["content-security-policy"]


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_api_docs_are_off_unless_serve_docs_turns_them_on(colour_rule_onnx, client, path):
    assert client.get(path).status_code == 404
    with TestClient(create_app(colour_rule_onnx, serve_params(docs=True)), base_url=BASE_URL) as with_docs:
        response = with_docs.get(path)
    assert response.status_code == 200
    if path == "/openapi.json":
        assert {"/predict", "/reload", "/model"} <= set(response.json()["paths"])
    else:  # its own policy: the CDN it loads from, Swagger UI's one inline script by its hash
        csp = response.headers["content-security-policy"]
        assert "script-src https://cdn.jsdelivr.net" in csp and "frame-ancestors 'none'" in csp
        assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
        assert "/openapi.json" in response.text


def test_serve_docs_is_a_boolean_key():
    assert ServeParams().docs is False
    with pytest.raises(ValueError, match="docs"):
        ServeParams.model_validate({"docs": "sometimes"})


CROSS_SITE = {
    "a form from another site": {"origin": "https://evil.example", "content-type": "text/plain"},
    "fetch from another site, JSON": {"origin": "https://evil.example", "content-type": "application/json"},
    "an opaque origin": {"origin": "null", "content-type": "text/plain"},
    "another port of this machine": {"origin": "http://localhost:9999"},
    "only a Referer from another site": {"referer": "https://evil.example/page.html"},
    "Sec-Fetch-Site cross-site": {"sec-fetch-site": "cross-site", "content-type": "application/json"},
    "an old browser's form post without Origin": {"content-type": "application/x-www-form-urlencoded"},
}


@pytest.mark.parametrize("case", CROSS_SITE, ids=list(CROSS_SITE))
def test_reload_from_another_site_is_refused_on_loopback(colour_rule_onnx, monkeypatch, case):
    monkeypatch.delenv("SEGFLOW_SERVE_TOKEN", raising=False)
    with TestClient(create_app(colour_rule_onnx, LIMITS), base_url=BASE_URL) as client:
        response = client.post("/reload", headers=CROSS_SITE[case], content=b"x=1")
        assert client.post("/predict", content=encode(scene(30, 30))).status_code == 200  # uploads stay open
    assert response.status_code == 403, response.text
    assert "another web site" in response.json()["detail"] and "curl -X POST" in response.json()["detail"]


SAME_SITE = {
    "curl -X POST (no body, no Origin)": ({}, None),
    "a script's JSON": ({"content-type": "application/json"}, b"{}"),
    "the service's own page": ({"origin": "http://localhost", "content-type": "text/plain"}, b"x"),
    "its own page, by Referer": ({"referer": "http://localhost/", "sec-fetch-site": "same-origin"}, None),
}


@pytest.mark.parametrize("case", SAME_SITE, ids=list(SAME_SITE))
def test_reload_from_this_machine_or_the_page_works(colour_rule_onnx, monkeypatch, case):
    monkeypatch.delenv("SEGFLOW_SERVE_TOKEN", raising=False)
    headers, body = SAME_SITE[case]
    with TestClient(create_app(colour_rule_onnx, LIMITS), base_url=BASE_URL) as client:
        response = client.post("/reload", headers=headers, content=body)
    assert response.status_code == 200, response.text
    assert response.json()["reloaded"] is False


def test_with_the_token_any_body_type_works_but_another_site_does_not(colour_rule_onnx, monkeypatch):
    monkeypatch.setenv("SEGFLOW_SERVE_TOKEN", "s3cret-token")
    token = {"authorization": "Bearer s3cret-token"}
    with TestClient(create_app(colour_rule_onnx, LIMITS), base_url=BASE_URL) as client:
        form = client.post("/reload", headers={**token, "content-type": "text/plain"}, content=b"x")
        cross = client.post("/reload", headers={**token, "origin": "https://evil.example"})
        without = client.post("/reload", headers={"origin": "http://localhost"})
    assert form.status_code == 200, form.text
    assert cross.status_code == 403 and "Origin: https://evil.example" in cross.json()["detail"]
    assert without.status_code == 401


def test_source_spec_errors_say_what_to_give(tmp_path):
    with pytest.raises(Exception, match="models:/<name>@<alias>"):
        ModelSource("champion")
    with pytest.raises(Exception, match="not found"):
        ModelSource(tmp_path / "missing.onnx")


@pytest.mark.slow
def test_champion_is_exported_served_and_swapped_when_the_alias_moves(
    register_version, registry_params, frozen_split, tmp_path, capsys
):
    import mlflow
    import yaml

    from segflow.cli import main
    from segflow.registry.register import move_champion

    first = register_version(1)  # sky everywhere; the first version becomes champion
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(registry_params.model_dump(mode="json")))
    with pytest.raises(SystemExit) as exited:
        # The fast exporter (test_export.py checks both): the export is not what this test checks.
        main(["export", "--params", str(params_file), "--artifacts", str(frozen_split), "--exporter", "torchscript"])
    assert exited.value.code == 0
    assert "ONNX int8 (served)" in capsys.readouterr().out
    client = mlflow.MlflowClient()
    tags = client.get_model_version("tiny", first).tags
    assert tags["onnx.default"] == "int8" and tags["onnx.int8"].endswith(f"onnx/v{first}/model.int8.onnx")
    assert float(tags["onnx.int8_miou_loss"]) == 0.0
    assert json.loads(tags["onnx.max_image_disagreement"]) == {"fp32": 0.0, "int8": 0.0}
    report = json.loads(mlflow.artifacts.load_text(tags["onnx.report"]))
    assert report["default"] == "int8" and report["model"]["version"] == first
    second = register_version(2)  # thing everywhere, not exported: served with PyTorch

    app = create_app(ModelSource("models:/tiny@champion"), ServeParams(poll_seconds=0.2))
    image = encode(scene(50, 70))
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        model = http.get("/model").json()
        assert (model["version"], model["alias"], model["runtime"]) == (first, "champion", "onnx-int8")
        assert model["metrics"]["test_miou"] == pytest.approx(report["miou"]["int8"])
        assert http.post("/reload").json()["reloaded"] is False

        answers, stop = [], threading.Event()

        def keep_asking() -> None:
            with httpx.Client(base_url=url, timeout=60) as own:
                while not stop.is_set():
                    response = own.post("/predict", content=image)
                    answers.append(
                        (
                            response.status_code,
                            response.headers.get("x-model-version"),
                            set(np.unique(mask_of(response)).tolist()) if response.status_code == 200 else None,
                        )
                    )

        with ThreadPoolExecutor(8) as pool:
            for _ in range(8):
                pool.submit(keep_asking)
            time.sleep(0.5)
            move_champion(client, "tiny", second, expected=first)  # the poll thread notices
            deadline = time.monotonic() + 30
            while http.get("/model").json()["version"] != second and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            stop.set()
        assert http.get("/model").json()["runtime"] == "torch"
        statuses = {status for status, _, _ in answers}
        assert statuses == {200}, statuses
        # Every answer came whole from one model: version 1 says sky, version 2 says thing.
        by_version = {version: classes for _, version, classes in answers}
        assert {v for v in by_version} == {first, second}
        assert all(classes == ({1} if version == first else {2}) for _, version, classes in answers)

        move_champion(client, "tiny", first, expected=second)
        reloaded = http.post("/reload").json()  # the poll may have got there first
        assert http.get("/model").json()["version"] == first
        health = http.get("/health").json()
        assert health["reloads"] >= 2 and health["last_reload_error"] is None
        assert reloaded["model"]["version"] == first
        reload_line = [
            line for line in http.get("/metrics").text.splitlines() if line.startswith("segflow_model_reloads_total ")
        ]
        assert float(reload_line[0].split()[1]) == health["reloads"]
