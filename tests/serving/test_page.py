"""The page (GET /) in headless Chromium: choose a photo, press Segment, see the mask,
the overlay and the legend with each class's share; a bad file shows the server's reason.

Chromium is Debian's (`make browser`: apt-get install chromium), driven by Playwright's
Python package. The screenshot is saved to tests/artifacts/serve_page.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import REPO_ROOT, SERVE_CLASSES, SERVE_PALETTE, colour_rule_mask, live_server, scene
from PIL import Image

from segflow.config import ServeParams
from segflow.serving.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
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
ARTIFACTS = REPO_ROOT / "tests" / "artifacts"

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent: `make browser` installs Debian's chromium"
)


@pytest.fixture(scope="module")
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 960})
        finally:
            browser.close()


def test_upload_segment_and_read_the_legend(colour_rule_onnx, browser_page, tmp_path):
    from playwright.sync_api import expect

    page = browser_page
    photo = scene(240, 320)
    path = tmp_path / "street.png"
    Image.fromarray(photo).save(path)
    truth = colour_rule_mask(photo)
    refused = []  # what the Content-Security-Policy blocked: the page must need nothing it forbids
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )
    with live_server(create_app(colour_rule_onnx, ServeParams(poll_seconds=0))) as url:
        answer = page.goto(url)
        assert "script-src 'self'" in answer.headers["content-security-policy"]
        expect(page.get_by_test_id("model-info")).to_contain_text("colour-rule version 7")
        expect(page.get_by_test_id("model-info")).to_contain_text("test mIoU 50.0%")
        page.get_by_test_id("file").set_input_files(path)
        page.get_by_test_id("segment").click()
        expect(page.locator("body")).to_have_attribute("data-state", "done", timeout=30_000)

        # The mask is at the photo's size, in class colours.
        size = page.eval_on_selector("#mask", "m => [m.naturalWidth, m.naturalHeight]")
        assert size == [320, 240]
        legend = page.locator("#legend li")
        expect(legend).to_have_count(len(SERVE_CLASSES))
        names = legend.evaluate_all("items => items.map(i => i.dataset.class)")
        shares = legend.evaluate_all("items => items.map(i => Number(i.dataset.share))")
        assert names == SERVE_CLASSES
        for index, share in enumerate(shares):
            assert share == pytest.approx((truth == index).mean(), abs=0.02)
        expect(legend.nth(1)).to_contain_text(f"sky{100 * shares[1]:.1f}%")

        # Full opacity: the overlay shows the class colour; zero: the photo itself.
        page.get_by_test_id("opacity").fill("100")
        pixel = "c => Array.from(c.getContext('2d').getImageData(10, 10, 1, 1).data.slice(0, 3))"
        assert page.eval_on_selector("#overlay", pixel) == SERVE_PALETTE[1]
        page.get_by_test_id("opacity").fill("0")
        assert page.eval_on_selector("#overlay", pixel) == photo[10, 10].tolist()
        page.get_by_test_id("opacity").fill("55")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "serve_page.png"), full_page=True)

        # A file that is not an image: the server's reason is shown, nothing breaks.
        bad = tmp_path / "notes.png"
        bad.write_text("not a photo")
        page.get_by_test_id("file").set_input_files(bad)
        page.get_by_test_id("segment").click()
        expect(page.get_by_test_id("error")).to_contain_text("not an image")
        expect(legend).to_have_count(len(SERVE_CLASSES))  # the last result stays on screen
    assert refused == []
