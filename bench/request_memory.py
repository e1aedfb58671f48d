"""Memory of one served request for a large legal photo, and what stays after many.

    python bench/request_memory.py --runtime int8 --runtime torch [--side 7000] [--requests 20]

For each runtime, in a fresh process: the service on the project's @champion (segflow serve's
app, in this process on uvicorn), a warm-up request, then one request with a side x side
16-bit RGB PNG (the sample scene, enlarged, with noise: it does not compress to nothing).
Reports the peak resident growth of that request (VmHWM reset before it) and the resident
size after `--requests` more, relative to after the first. Needs the registered model
(`dvc repro`) and, for int8/fp32, `segflow export`.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> int:
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def one_runtime(runtime: str, side: int, requests: int) -> dict:
    import cv2
    import httpx
    import numpy as np

    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "scripts")]
    from conftest import live_server, scene

    from segflow.config import ServeParams
    from segflow.serving.app import create_app

    rng = np.random.default_rng(0)
    image = cv2.resize(scene(side // 8, side // 8), (side, side), interpolation=cv2.INTER_NEAREST)
    sixteen = image.astype(np.uint16) * 257 + rng.integers(0, 4, image.shape, dtype=np.uint16)
    data = cv2.imencode(".png", sixteen[:, :, ::-1])[1].tobytes()
    del image, sixteen
    small = cv2.imencode(".png", scene(96, 128))[1].tobytes()
    limit = len(data) + 10_000
    serve = ServeParams(
        runtime=runtime, max_upload_bytes=limit, max_buffered_bytes=limit, poll_seconds=0, max_concurrent=1
    )
    app = create_app("models:/segflow-unet@champion", serve)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=600) as http:
        assert http.post("/predict", content=small).status_code == 200
        before = _reset_peak()
        first = http.post("/predict", content=data)
        peak = _status("VmHWM") - before
        assert first.status_code == 200, first.text
        after_first = _status("VmRSS")
        for _ in range(requests):
            assert http.post("/predict", content=data).status_code == 200
        gc.collect()
        after_all = _status("VmRSS")
    return {
        "runtime": runtime,
        "served_runtime": first.headers["X-Model-Runtime"],
        "side": side,
        "upload_mb": round(len(data) / 1e6, 1),
        "peak_growth_mb": round(peak / 2**20),
        "resident_after_1_mb": round((after_first - before) / 2**20),
        f"resident_after_{requests + 1}_mb": round((after_all - before) / 2**20),
        "growth_over_last_requests_mb": round((after_all - after_first) / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", action="append", choices=["int8", "fp32", "torch"])
    parser.add_argument("--side", type=int, default=7000)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one runtime
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_runtime(args.one, args.side, args.requests)))
        return
    for runtime in args.runtime or ["int8", "torch"]:
        command = [sys.executable, __file__, "--one", runtime, "--side", str(args.side)]
        result = subprocess.run([*command, "--requests", str(args.requests)], capture_output=True, text=True, cwd=ROOT)
        print(result.stdout.strip().splitlines()[-1] if result.returncode == 0 else result.stderr[-2000:])


if __name__ == "__main__":
    main()
