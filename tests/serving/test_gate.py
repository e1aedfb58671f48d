"""segflow.serving.gate: a burst of large legal photos gets 503 + Retry-After beyond
serve.max_concurrent, never a 500, and the service's memory grows by at most the bound
stated in segflow.serving.app per admitted request."""

from __future__ import annotations

import gc
import io
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from helpers import SERVE_CLASSES, colour_rule_mask, live_server, scene
from PIL import Image

from segflow.config import ServeParams
from segflow.serving.app import create_app

#: Side of the test photos: 16 MP, a 16-bit RGB PNG of about 0.2 MB.
SIDE = 4000
#: Slack for what a request holds besides the stated bound: the upload, the response, the
#: allocator's rounding and the HTTP machinery (measured: well under 50 MB).
MARGIN = 100 * 2**20


def stated_bound(pixels: int, classes: int, scale: float) -> int:
    """Peak bytes of one request, as segflow.serving.app's docstring and the README state it
    (at scale 1 nothing is resized back, so no UPSAMPLE_BYTES term)."""
    return int(pixels * (8 + (3 + 4 * classes) * scale**2))


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def reset_peak() -> int:
    """Reset this process's peak RSS (VmHWM) to its current RSS, which it returns."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError as exc:
        pytest.skip(f"cannot reset the peak RSS here ({exc}): needs Linux's /proc/self/clear_refs")
    return _status_bytes("VmRSS")


@pytest.fixture(scope="module")
def big_photo() -> tuple[bytes, np.ndarray]:
    """A 4000x4000 16-bit RGB PNG of the test scene, and the scene as 8-bit RGB."""
    image = scene(SIDE, SIDE)
    ok, data = cv2.imencode(".png", image[:, :, ::-1].astype(np.uint16) * 257)
    assert ok
    return data.tobytes(), image


@pytest.mark.parametrize("slots", [1, 2])
def test_a_burst_of_large_photos_is_queued_refused_and_bounded(colour_rule_onnx, big_photo, slots):
    data, image = big_photo
    serve = ServeParams(
        max_upload_bytes=2_000_000, max_pixels=SIDE * SIDE, poll_seconds=0, max_concurrent=slots, queue_seconds=0.3
    )
    app = create_app(colour_rule_onnx, serve)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=120) as http:
        assert http.post("/predict", content=encode_small()).status_code == 200  # warm: sessions, pools
        before = reset_peak()
        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(lambda _: http.post("/predict", content=data), range(6)))
        growth = _status_bytes("VmHWM") - before
        after = http.post("/predict", content=encode_small())  # the service still answers
        metrics = http.get("/metrics").text
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= slots and statuses.count(503) >= 1, statuses
    for response in responses:
        if response.status_code == 503:
            assert int(response.headers["Retry-After"]) >= 1
            assert "busy" in response.json()["detail"] and "serve.max_concurrent" in response.json()["detail"]
        else:
            mask = np.array(Image.open(io.BytesIO(response.content)))
            assert (mask == colour_rule_mask(image)).mean() > 0.999
    assert after.status_code == 200
    refused = statuses.count(503)
    assert f'segflow_requests_total{{method="POST",route="/predict",status="503"}} {refused:.1f}' in metrics
    bound = slots * stated_bound(SIDE * SIDE, len(SERVE_CLASSES), 1.0) + MARGIN
    print(f"slots={slots}: peak RSS growth {growth / 2**20:.0f} MiB, bound {bound / 2**20:.0f} MiB")
    assert growth <= bound, f"peak RSS grew {growth / 2**20:.0f} MiB, over the stated {bound / 2**20:.0f} MiB"


def encode_small() -> bytes:
    return cv2.imencode(".png", scene(64, 96))[1].tobytes()


SERVICE = """
import sys, uvicorn
from segflow.config import ServeParams
from segflow.serving.app import create_app
serve = ServeParams(max_upload_bytes=2_000_000, max_pixels={pixels}, poll_seconds=0)
uvicorn.run(create_app(sys.argv[1], serve), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def _resident_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def _resident_within(pid: int, limit: int, seconds: float = 10) -> int:
    """The resident size once it is at most `limit`, or after `seconds`: the middleware trims
    after the response is sent, so right after it the pages may not be back yet (seen on a
    machine loaded by other tests)."""
    deadline = time.monotonic() + seconds
    while (resident := _resident_of(pid)) > limit and time.monotonic() < deadline:
        time.sleep(0.1)
    return resident


def test_twenty_large_requests_in_a_row_leave_no_memory_behind(colour_rule_onnx, big_photo):
    """The resident size after 20 requests of a 16 MP 16-bit PNG is that after the first,
    within a margin: freed pages go back to the system (segflow.serving.gate.give_back_memory),
    or glibc's per-thread arenas keep about 6 MB a request. The service runs in its own
    process, so what earlier tests left in this one does not count."""
    data, _ = big_photo
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = SERVICE.format(pixels=SIDE * SIDE)
    service = subprocess.Popen([sys.executable, "-c", code, str(colour_rule_onnx), str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            assert service.poll() is None, "the service exited"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the service did not start in 120 s"
            time.sleep(0.2)
        with httpx.Client(base_url=url, timeout=120) as http:
            assert http.post("/predict", content=data).status_code == 200
            after_first = _resident_within(service.pid, 0, seconds=3)  # what is left after 3 s
            for _ in range(20):
                assert http.post("/predict", content=data).status_code == 200
            growth = _resident_within(service.pid, after_first + 24 * 2**20) - after_first
    finally:
        service.terminate()
        service.wait(timeout=30)
    print(f"resident growth over 20 more requests: {growth / 2**20:.1f} MiB")
    assert growth <= 24 * 2**20, f"the service kept {growth / 2**20:.0f} MiB more after 20 requests"


@pytest.fixture(scope="module")
def shrinking_onnx(colour_rule_onnx, tmp_path_factory) -> Path:
    """The colour-rule model with a working size, as a real plan gives one (long side 512)."""
    from segflow.runtime.onnx_file import read_metadata, write_metadata

    path = tmp_path_factory.mktemp("shrinking") / "colour_rule_512.onnx"
    path.write_bytes(Path(colour_rule_onnx).read_bytes())
    write_metadata(path, {**read_metadata(path), "long_side": 512})
    return path


def test_a_49_megapixel_16_bit_png_takes_at_most_300_mb(shrinking_onnx):
    """Issue 22.3: a legal 7000x7000 16-bit RGB PNG, at a working size, grows the service's
    peak resident size by at most 300 MB: Pillow's copy (4 bytes a pixel) is shrunk a band of
    rows at a time, never converted to a full-size RGB array beside it (that took 397 MB)."""
    side = 7000
    image = cv2.resize(scene(side // 10, side // 10), (side, side), interpolation=cv2.INTER_NEAREST)
    data = cv2.imencode(".png", image[:, :, ::-1].astype(np.uint16) * 257)[1].tobytes()
    expected = colour_rule_mask(image)
    del image
    serve = ServeParams(max_upload_bytes=len(data) + 1000, max_pixels=side * side, poll_seconds=0)
    with live_server(create_app(shrinking_onnx, serve)) as url, httpx.Client(base_url=url, timeout=300) as http:
        assert http.post("/predict", content=encode_small()).status_code == 200  # warm
        before = reset_peak()
        response = http.post("/predict", content=data)
        growth = _status_bytes("VmHWM") - before
    assert response.status_code == 200, response.text
    mask = np.array(Image.open(io.BytesIO(response.content)))
    assert mask.shape == (side, side) and (mask == expected).mean() > 0.99
    print(f"49 MP 16-bit PNG ({len(data) / 1e6:.1f} MB): peak growth {growth / 1e6:.0f} MB")
    assert growth <= 300e6, f"one request grew the peak resident size by {growth / 1e6:.0f} MB (over 300 MB)"
