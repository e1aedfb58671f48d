"""Benchmark: `segflow serve` through HTTP on 127.0.0.1, 1 and 8 concurrent clients.

Starts the service in its own process (uvicorn, as `segflow serve` runs it) on a free
port, then for each client count posts the same 512x512 JPEG to /predict (PNG mask back)
from that many threads for --seconds, and reports p50/p95 latency, throughput, the 5xx
count, and the ratio of the HTTP p50 to the bare model time: the same image through the
same predictor in this process, before the server starts (and the server's own mean
model time, from /metrics). The model time is the whole prediction path: the image
resized to the model's working resolution, run whole or in tiles, and the mask resized
back to the posted size (segflow.inference.segment), so it depends on the trained plan.
Client threads share the 2 cores with the server: on a bigger machine the server would
get more of them.

    python bench/http_load.py --out artifacts/bench/http.json

Without --model it exports artifacts/train/model.pt (segflow.export) into
artifacts/bench/serve/ and serves the variant the export picks as default, as `segflow
serve` would for a registered version; `--model FILE` serves a given .onnx or .pt file.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

from segflow.config import load_params
from segflow.runtime.source import ModelSource
from segflow.serving.decode import decode_image


def default_model(params_path: Path, data: Path, checkpoint: Path, out: Path) -> Path:
    """Export `checkpoint` into `out` and return the variant the export picks."""
    from segflow.export.export import VARIANT_FILES, export_checkpoint
    from segflow.inference.network import load_checkpoint

    params = load_params(params_path)
    model, meta = load_checkpoint(checkpoint)
    run = Path("artifacts/train/run.json")  # the version the pipeline registered, for the page
    version = json.loads(run.read_text())["model_version"] if run.is_file() else None
    report = export_checkpoint(model, meta, params, data, out, name=params.mlflow.model_name, version=version)
    return out / VARIANT_FILES[report["default"]]


def photo(size: int) -> bytes:
    """A sample scene resized to size x size, as a JPEG."""
    images = sorted(Path("artifacts/fetch/images").glob("*.jpg"))
    image = cv2.imread(str(images[0])) if images else np.random.default_rng(0).integers(0, 255, (240, 320, 3), np.uint8)
    ok, data = cv2.imencode(
        ".jpg", cv2.resize(image, (size, size), interpolation=cv2.INTER_CUBIC), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    return data.tobytes()


def bare_model_ms(model: Path, body: bytes, repeats: int) -> float:
    """Median ms of the predictor on the decoded image: what a request costs without HTTP."""
    _, predictor = ModelSource(model).load()
    image = decode_image(body, 10**9, 1)
    predictor.predict(image)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(image)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def load(url: str, body: bytes, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.monotonic() < stop:
                start = time.perf_counter()
                status = http.post("/predict", content=body, headers={"content-type": "image/jpeg"}).status_code
                elapsed = 1000 * (time.perf_counter() - start)
                with lock:
                    latencies.append(elapsed)
                    statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    begin = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - begin
    ordered = sorted(latencies)
    return {
        "clients": clients,
        "seconds": wall,
        "requests": len(ordered),
        "p50_ms": ordered[len(ordered) // 2],
        "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "throughput_per_s": len(ordered) / wall,
        "statuses": statuses,
        "errors_5xx": sum(n for s, n in statuses.items() if s >= 500),
    }


def server_model_ms(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    values = {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(("segflow_inference_duration_seconds_sum", "segflow_inference_duration_seconds_count"))
    }
    return (
        1000
        * values["segflow_inference_duration_seconds_sum"]
        / max(values["segflow_inference_duration_seconds_count"], 1)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an .onnx or .pt file to serve (default: export the trained model)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--data", type=Path, default=Path("artifacts/preprocess"))
    parser.add_argument("--checkpoint", type=Path, default=Path("artifacts/train/model.pt"))
    parser.add_argument("--size", type=int, default=512, help="side of the posted JPEG (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="per client count (default %(default)s)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    model = args.model or default_model(args.params, args.data, args.checkpoint, Path("artifacts/bench/serve"))
    body = photo(args.size)
    bare = bare_model_ms(model, body, 30)

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from segflow.cli import main; main()",
            "serve",
            "--model",
            str(model),
            "--params",
            str(args.params),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        info = httpx.get(f"{url}/model").json()
        runs = [load(url, body, clients, args.seconds) for clients in args.clients]
        served = server_model_ms(url)
    finally:
        server.terminate()
        server.wait(timeout=30)
    for run in runs:
        run["http_p50_over_bare_model"] = run["p50_ms"] / bare
    result = {
        "model": {k: info.get(k) for k in ("name", "version", "runtime", "bytes", "long_side", "tile")},
        "input": f"{args.size}x{args.size} JPEG, {len(body)} bytes",
        "bare_model_ms": bare,
        "server_mean_model_ms": served,
        "runs": runs,
    }
    print(f"model {info['runtime']} ({info['bytes'] / 1e6:.1f} MB); bare model {bare:.1f} ms per {args.size}² image")
    print("| clients | requests | p50 ms | p95 ms | req/s | 5xx | HTTP p50 / bare model |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        print(
            f"| {run['clients']} | {run['requests']} | {run['p50_ms']:.1f} | {run['p95_ms']:.1f} | "
            f"{run['throughput_per_s']:.1f} | {run['errors_5xx']} | {run['http_p50_over_bare_model']:.2f} |"
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
