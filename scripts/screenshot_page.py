"""Make docs/serve.png: the service's page after segmenting a sample photo.

    python scripts/screenshot_page.py --model models:/segflow-unet@champion
    python scripts/screenshot_page.py --model artifacts/bench/serve/model.int8.onnx

Runs the service in this process (as tests/serving/test_page.py does) and drives the page with
Debian's Chromium (`make browser`) through Playwright.
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import expect, sync_playwright

from segflow.config import load_params
from segflow.registry import tracking
from segflow.runtime.source import ModelSource
from segflow.serving.app import create_app

ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="what `segflow serve --model` takes")
    parser.add_argument(
        "--photo",
        type=Path,
        default=Path("artifacts/fetch/images/scene_005.jpg"),
        help="a test-split photo of the sample (default %(default)s)",
    )
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("docs/serve.png"))
    args = parser.parse_args()
    tracking.configure(Path.cwd())
    params = load_params(args.params)
    app = create_app(ModelSource(args.model, params.serve.runtime), params.serve.model_copy(update={"poll_seconds": 0}))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.goto(f"http://127.0.0.1:{sock.getsockname()[1]}")
            page.get_by_test_id("file").set_input_files(args.photo)
            page.get_by_test_id("segment").click()
            expect(page.locator("body")).to_have_attribute("data-state", "done", timeout=60_000)
            page.get_by_test_id("opacity").fill("60")
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
