"""segflow.serving.uploads, with raw sockets as a hostile client sends: a stalled body is cut
off with 408 after serve.upload_seconds, the bytes held by unfinished uploads are capped
(503 + Retry-After beyond serve.max_buffered_bytes), uploads hold no gate slot (a small
photo is segmented while they stall), and large bodies wait on disk, not in memory."""

from __future__ import annotations

import gc
import socket
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np
from helpers import live_server, scene

from segflow.config import ServeParams
from segflow.serving.app import create_app


def photo(side: int, seed: int = 0) -> bytes:
    """A PNG of noise: about 3·side² bytes (noise does not compress)."""
    noise = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return cv2.imencode(".png", noise)[1].tobytes()


def small() -> bytes:
    return cv2.imencode(".png", scene(64, 96))[1].tobytes()


def stall(url: str, body: bytes, sent: int) -> socket.socket:
    """A connection that announces `body` in full, sends its first `sent` bytes and stops."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body[:sent])
    return sock


def answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status and the raw response of a stalled connection (what the server sent on its own)."""
    received = b""
    while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    return int(received.split(b" ", 2)[1]), received


def resident() -> int:
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmRSS")


def wait_for_uploads(url: str, count: int, within: float) -> None:
    """Return once the service reports `count` bytes of unfinished uploads (GET /metrics), so a
    test measures what it holds after they arrived, not after a guessed sleep."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline, held = time.monotonic() + within, None
    while time.monotonic() < deadline:
        text = httpx.get(f"{url}/metrics").text
        held = next(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "segflow_upload_bytes_in_progress"
        )
        if held == count:
            return
        time.sleep(0.02)
    raise AssertionError(f"{count:,} bytes of uploads should be in progress within {within} s; the service had {held}")


def test_a_stalled_body_is_cut_off_and_holds_no_slot(colour_rule_onnx):
    serve = ServeParams(upload_seconds=1.5, max_concurrent=1, queue_seconds=0.2, poll_seconds=0)
    with live_server(create_app(colour_rule_onnx, serve)) as url, httpx.Client(base_url=url, timeout=30) as http:
        body = photo(300)
        start = time.monotonic()
        with stall(url, body, len(body) - 1) as stalled:
            # One slot (max_concurrent: 1), yet the stalled upload does not hold it.
            assert http.post("/predict", content=small()).status_code == 200
            status, raw = answer(stalled)
        waited = time.monotonic() - start
        assert status == 408 and b"serve.upload_seconds" in raw, raw
        assert 1.4 <= waited <= 10, waited
        assert http.post("/predict", content=body).status_code == 200  # the whole body in time: served


def test_unfinished_uploads_share_a_capped_budget_that_is_given_back(colour_rule_onnx):
    body = photo(800)  # about 1.9 MB
    cap = 4_000_000
    serve = ServeParams(max_buffered_bytes=cap, upload_seconds=3, max_upload_bytes=3_000_000, poll_seconds=0)
    with live_server(create_app(colour_rule_onnx, serve)) as url, httpx.Client(base_url=url, timeout=30) as http:
        with ExitStack() as stack:
            stalled = [stack.enter_context(stall(url, body, 1_500_000)) for _ in range(2)]  # 3 MB held
            wait_for_uploads(url, 3_000_000, within=2.5)
            refused = http.post("/predict", content=body)  # would hold 4.9 MB
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "5" and "serve.max_buffered_bytes" in refused.json()["detail"]
            assert http.post("/predict", content=small()).status_code == 200  # within the budget: served
            assert [answer(sock)[0] for sock in stalled] == [408, 408]
        assert http.post("/predict", content=body).status_code == 200  # their bytes were given back


def test_twenty_stalled_large_uploads_wait_on_disk_not_in_memory(colour_rule_onnx):
    body = photo(1200)  # about 4.3 MB: 20 of them fit the default 100 MB budget
    serve = ServeParams(upload_seconds=4, max_upload_bytes=6_000_000, poll_seconds=0)
    with live_server(create_app(colour_rule_onnx, serve)) as url:
        before = resident()
        with ExitStack() as stack:
            stalled = [stack.enter_context(stall(url, body, len(body) - 1)) for _ in range(20)]
            wait_for_uploads(url, 20 * (len(body) - 1), within=3.5)  # every body but its last byte
            growth = resident() - before
            statuses = [answer(sock)[0] for sock in stalled]
        print(f"20 stalled uploads of {len(body) / 1e6:.1f} MB: resident growth {growth / 2**20:.1f} MiB")
        assert statuses == [408] * 20
        # 86 MB arrived; in memory they would be 86 MB more. Spooled: a few MiB of buffers.
        assert growth < 25 * 2**20, f"the service grew {growth / 2**20:.0f} MiB holding 20 stalled uploads"
