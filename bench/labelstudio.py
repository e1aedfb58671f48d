"""Benchmark: segflow as Label Studio's ML backend, on a real Label Studio and the champion.

A Label Studio (the test's pinned release, its venv and start-up: tests/serving/test_label_studio_backend.py)
on 127.0.0.1 with a throwaway data dir; a brush-label project; PHOTOS photos of
via-heads-balloon (see its SOURCE.md) resized to about 1 MP and imported; `segflow backend`'s
app (create_backend) on MODEL with the int8 runtime, connected through Label Studio's API.

  predict     seconds per task of POST /labelstudio/predict with one task (what Label Studio
              sends when a task is opened): the photo fetched from Label Studio with the
              token, decoded, segmented, each class encoded as brush RLE; each photo REPEATS
              times, the median over all, and the min-max
  round trip  the predictions taken as annotations in Label Studio, pulled with
              pull_annotations, read back by segflow's Label Studio reader; IoU per photo and
              class of the read mask against the mask the predictor gives for the same photo

    python bench/labelstudio.py --out artifacts/bench/labelstudio.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import live_server  # noqa: E402 (the tests' uvicorn-in-a-thread helper)
from pycocotools import mask as coco_mask  # noqa: E402
from test_label_studio_backend import LS_VERSION, _install_label_studio, running_label_studio  # noqa: E402

from segflow.config import ServeParams  # noqa: E402
from segflow.data.readers.label_studio import read_label_studio  # noqa: E402
from segflow.runtime.source import ModelSource  # noqa: E402
from segflow.serving.decode import decode_image  # noqa: E402
from segflow.serving.labelstudio import create_backend  # noqa: E402
from segflow.serving.labelstudio_client import LabelStudio  # noqa: E402
from segflow.serving.labelstudio_pull import pull_annotations  # noqa: E402

DATASET = REPO.parent / "shared" / "datasets" / "via-heads-balloon"
#: The photos' size after resizing (pixels), about 1 MP at their own aspect ratio.
TARGET_PIXELS = 1_000_000


def _photos(count: int) -> dict[str, bytes]:
    """`count` photos of the dataset (largest first), upright, resized to about 1 MP, as JPEG."""
    files = sorted((p for p in DATASET.rglob("*.jpg")), key=lambda p: -p.stat().st_size)[:count]
    out = {}
    for path in files:
        image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
        scale = (TARGET_PIXELS / (image.width * image.height)) ** 0.5
        image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=92)
        out[f"{path.parent.name}-{path.name}"] = buffer.getvalue()
    return out


def _config(labels: list[str]) -> str:
    items = "".join(f'<Label value="{label}"/>' for label in labels)
    brush = f'<BrushLabels name="tag" toName="image">{items}</BrushLabels>'
    return f'<View><Image name="image" value="$image"/>{brush}</View>'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="models:/segflow-unet@champion")
    parser.add_argument("--runtime", default="int8")
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{REPO / 'mlflow.db'}")

    started = time.monotonic()
    python = _install_label_studio()
    install_s = time.monotonic() - started
    photos = _photos(args.photos)
    with tempfile.TemporaryDirectory(prefix="bench-ls-") as scratch:
        data = Path(scratch) / "ls"
        data.mkdir()
        started = time.monotonic()
        with running_label_studio(python, data) as (url, token):
            start_s = time.monotonic() - started
            studio = LabelStudio(url, token)
            app = create_backend(ModelSource(args.model, args.runtime), ServeParams(poll_seconds=0), studio)
            predictor = app.state.holder.current
            names = [n for n in predictor.info.class_names if n != "background"]
            config = _config(names)
            api = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=600)
            project = api.post("/api/projects", json={"title": "bench", "label_config": config}).json()["id"]
            files = [(name, (name, body, "image/jpeg")) for name, body in photos.items()]
            api.post(f"/api/projects/{project}/import", files=files).raise_for_status()
            tasks = api.get("/api/tasks", params={"project": project, "fields": "all"}).json()["tasks"]
            with live_server(app) as backend:
                seconds: list[float] = []
                post = httpx.Client(base_url=backend, timeout=600)
                for task in tasks:  # warm-up: the first run of a shape sets up buffers
                    body = {"tasks": [{"id": task["id"], "data": task["data"]}], "label_config": config}
                    post.post("/labelstudio/predict", json=body).raise_for_status()
                for _ in range(args.repeats):
                    for task in tasks:
                        body = {"tasks": [{"id": task["id"], "data": task["data"]}], "label_config": config}
                        begin = time.perf_counter()
                        answer = post.post("/labelstudio/predict", json=body)
                        seconds.append(time.perf_counter() - begin)
                        answer.raise_for_status()
                        assert "result" in answer.json()["results"][0], answer.text[:300]
                ml = {"url": f"{backend}/labelstudio", "project": project, "title": "segflow"}
                api.post("/api/ml", json=ml).raise_for_status()
                selected = {"selectedItems": {"all": True, "excluded": []}}
                actions = {"id": "retrieve_tasks_predictions", "project": project}
                api.post("/api/dm/actions", params=actions, json=selected).raise_for_status()
            tasks = api.get("/api/tasks", params={"project": project, "fields": "all"}).json()["tasks"]
            for task in tasks:
                result = task["predictions"][0]["result"]
                api.post(f"/api/tasks/{task['id']}/annotations/", json={"result": result}).raise_for_status()
            out = Path(scratch) / "pulled"
            pull_annotations(studio, project, out, 50_000_000)
        ious = []
        for record in read_label_studio(out / "label-studio.json"):
            image = decode_image((out / record.filename).read_bytes(), 100_000_000, 8)
            expected = predictor.predict(image)
            read = {r.label: r for r in record.regions}
            for index, name in enumerate(predictor.info.class_names):
                if name == "background" or (name not in read and not (expected == index).any()):
                    continue
                got = np.zeros(expected.shape, bool)
                if name in read:
                    geometry = read[name].geometry
                    got = coco_mask.decode({"counts": geometry["counts"].encode(), "size": geometry["size"]}) > 0
                union = np.logical_or(got, expected == index).sum()
                ious.append(float(np.logical_and(got, expected == index).sum() / union) if union else 1.0)
    sizes = [Image.open(io.BytesIO(b)).size for b in photos.values()]
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "label_studio": LS_VERSION,
        "model": {"spec": args.model, "version": predictor.info.version, "runtime": predictor.info.runtime},
        "photos": {"count": len(photos), "megapixels": [round(w * h / 1e6, 3) for w, h in sizes]},
        "predict_s_per_task": {
            "median": round(statistics.median(seconds), 3),
            "min": round(min(seconds), 3),
            "max": round(max(seconds), 3),
            "requests": len(seconds),
        },
        "round_trip_iou": {"mean": round(float(np.mean(ious)), 6), "min": round(min(ious), 6), "masks": len(ious)},
        "label_studio_install_s": round(install_s, 1),
        "label_studio_start_s": round(start_s, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
