"""Label Studio's ML backend protocol (segflow.serving.labelstudio) and pull-annotations.

The first tests speak the protocol to the routes with real HTTP requests (its error paths,
in milliseconds); photos come from a small file server standing in for Label Studio's
/data/upload route. The last ones run a real Label Studio from PyPI (its own venv, built by
`make test`, else on first use, by tests/label_studio_venv.py; skipped with the reason when it
cannot be installed), started once for the module on 127.0.0.1 with a throwaway data dir: a brush-label project,
three photos, segflow's backend connected through Label Studio's API, predictions, a
corrected annotation, the export pulled and read back through segflow's reader.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import label_studio_venv
import numpy as np
import pytest
import yaml
from fastapi import FastAPI, Header, HTTPException, Response
from fastapi.testclient import TestClient
from helpers import REPO_ROOT, colour_rule_mask, live_server, run_checked, scene, shrunk_clone
from PIL import Image
from pycocotools import mask as coco_mask

from segflow.config import ServeParams
from segflow.config.data import FetchParams
from segflow.data.collect import collect
from segflow.data.drops import Drops
from segflow.data.readers.label_studio import read_label_studio
from segflow.data.readers.label_studio_rle import decode_brush_rle
from segflow.serving.brush_rle import encode_brush_rle
from segflow.serving.labelstudio import create_backend
from segflow.serving.labelstudio_client import LabelStudio, LabelStudioError
from segflow.serving.labelstudio_pull import pull_annotations
from segflow.serving.security import TOKEN_ENV

ROOT = REPO_ROOT
LS_VERSION = label_studio_venv.VERSION
CONFIG = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image">
    <Label value="Sky" background="#4682b4"/>
    <Label value="Thing" background="#dc143c"/>
  </BrushLabels>
</View>"""
POLYGON_CONFIG = CONFIG.replace("BrushLabels", "PolygonLabels")
LABEL_MAP = {"Sky": "sky", "Thing": "thing"}
SERVE = ServeParams(max_upload_bytes=2_000_000, max_pixels=1_000_000, queue_seconds=30)
TOKEN = "file-server-token"
#: The address the test clients send requests to (the service checks the Host header).
LOCAL = "http://127.0.0.1"


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, "PNG")
    return out.getvalue()


def uncertain(height: int, width: int) -> np.ndarray:
    """A scene whose lower half sits on the colour rule's boundary (blue - red = 64): the
    model is about 50% sure there, so this photo scores lowest."""
    image = scene(height, width)
    image[height // 2 :] = (100, 100, 164)
    return image


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


# --- The protocol, against a file server standing in for Label Studio's uploads ---


@pytest.fixture(scope="module")
def files() -> Iterator[tuple[str, dict[str, bytes]]]:
    """(base URL, {name: bytes}): GET /data/upload/1/<name> with 'Token <TOKEN>', as Label Studio serves uploads."""
    stored: dict[str, bytes] = {}
    server = FastAPI()

    @server.get("/data/upload/1/{name}")
    def upload(name: str, authorization: str = Header("")) -> Response:
        if authorization != f"Token {TOKEN}":
            raise HTTPException(401, "no token")
        if name not in stored:
            raise HTTPException(404, "no file")
        return Response(stored[name], media_type="application/octet-stream")

    with live_server(server) as url:
        yield url, stored


@pytest.fixture
def client(colour_rule_onnx, files) -> TestClient:
    return TestClient(create_backend(colour_rule_onnx, SERVE, LabelStudio(files[0], TOKEN), LABEL_MAP), base_url=LOCAL)


def predict(client: TestClient, *urls: str, config: str = CONFIG) -> dict:
    tasks = [{"id": n, "data": {"image": url}} for n, url in enumerate(urls, 1)]
    answer = client.post("/labelstudio/predict", json={"tasks": tasks, "label_config": config, "project": "1.1"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_health_and_setup_name_the_version_and_map_the_labels(client):
    health = client.get("/labelstudio/health").json()
    assert health["status"] == "UP" and health["model_version"] == "7"
    setup = client.post("/labelstudio/setup", json={"project": "1.1", "schema": CONFIG})
    assert setup.status_code == 200
    assert setup.json() == {"model_version": "7", "labels": {"Sky": "sky", "Thing": "thing"}}


@pytest.mark.parametrize(
    "schema, words",
    [
        (CONFIG.replace('"Thing"', '"Person"'), ["'Person'", "classes.label_map", "['background', 'sky', 'thing']"]),
        ('<View><Image name="image" value="$image"/><Choices name="c" toName="image"/></View>', ["no BrushLabels"]),
        (CONFIG.replace('toName="image"', 'toName="photo"'), ["toName must name an <Image>"]),
        ("<View><Image", ["not valid XML"]),
        ('<!DOCTYPE x [<!ENTITY a "b">]>' + CONFIG, ["DOCTYPE"]),
        (None, ["no labeling config"]),
    ],
)
def test_setup_refuses_configs_it_cannot_predict_into(client, schema, words):
    answer = client.post("/labelstudio/setup", json={"project": "1.1", "schema": schema})
    assert answer.status_code == 400
    for word in words:
        assert word in answer.json()["detail"]


def test_brush_prediction_round_trips_through_the_reader_decoder(client, files):
    image = scene(90, 120)
    files[1]["a1b2c3d4-street.png"] = png(image)
    body = predict(client, "/data/upload/1/a1b2c3d4-street.png")
    assert body["model_version"] == "7"
    [prediction] = body["results"]
    assert prediction["model_version"] == "7" and 0.5 < prediction["score"] <= 1.0
    expected = colour_rule_mask(image)
    masks = {r["value"]["brushlabels"][0]: r for r in prediction["result"]}
    assert sorted(masks) == ["Sky", "Thing"]
    for label, index in (("Sky", 1), ("Thing", 2)):
        result = masks[label]
        assert (result["original_width"], result["original_height"], result["from_name"]) == (120, 90, "tag")
        decoded = decode_brush_rle(result["value"]["rle"], 90, 120, label)
        assert np.array_equal(decoded, expected == index)


def test_polygon_prediction_in_percent_and_least_confident_scores_lowest(client, files):
    files[1]["sure.png"], files[1]["unsure.png"] = png(scene(80, 100)), png(uncertain(80, 100))
    sure, unsure = predict(client, "/data/upload/1/sure.png", "/data/upload/1/unsure.png", config=POLYGON_CONFIG)[
        "results"
    ]
    assert unsure["score"] < sure["score"] - 0.1
    labels = {r["value"]["polygonlabels"][0] for r in sure["result"]}
    assert labels == {"Sky", "Thing"} and all(r["type"] == "polygonlabels" for r in sure["result"])
    thing = next(r for r in sure["result"] if r["value"]["polygonlabels"] == ["Thing"])
    xs, ys = zip(*thing["value"]["points"], strict=True)
    assert min(xs) == pytest.approx(50, abs=1.5) and max(ys) == pytest.approx(100 * 79 / 80, abs=1.5)


@pytest.mark.parametrize(
    "url, words",
    [
        ("http://169.254.169.254/latest/meta-data", "not a file of the Label Studio server"),
        ("//evil.example/x.png", "not a file of the Label Studio server"),
        ("http://127.0.0.1:1/data/upload/1/ok.png", "not a file of the Label Studio server"),  # another port
        ("/data/upload/1/../../etc/passwd", "/data/etc/passwd: not found"),  # resolved on the server, not a path
        ("/data/upload/1/missing.png", "not found on Label Studio (404)"),
        ("/data/upload/1/big.png", "serve.max_upload_bytes"),
        ("/data/upload/1/many-pixels.png", "serve.max_pixels"),
        ("/data/upload/1/text.png", "not an image"),
    ],
)
def test_a_task_that_cannot_be_fetched_gets_an_error_not_a_500(client, files, url, words):
    files[1]["big.png"] = bytes(SERVE.max_upload_bytes + 1)
    files[1]["many-pixels.png"] = png(np.zeros((1001, 1000, 3), np.uint8))
    files[1]["text.png"] = b"hello"
    files[1]["ok.png"] = png(scene(40, 40))
    first, second = predict(client, url, "/data/upload/1/ok.png")["results"]
    assert "result" not in first and words in first["error"]
    assert second["model_version"] == "7" and second["result"]  # the batch's other task is predicted


def test_wrong_label_studio_token_and_unreachable_server_are_named(colour_rule_onnx, files):
    files[1]["ok.png"] = png(scene(40, 40))
    wrong = TestClient(
        create_backend(colour_rule_onnx, SERVE, LabelStudio(files[0], "wrong"), LABEL_MAP), base_url=LOCAL
    )
    [result] = predict(wrong, "/data/upload/1/ok.png")["results"]
    assert "refused the token" in result["error"] and "LABEL_STUDIO_API_KEY" in result["error"]
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    gone = TestClient(create_backend(colour_rule_onnx, SERVE, LabelStudio(closed, TOKEN), LABEL_MAP), base_url=LOCAL)
    [result] = predict(gone, "/data/upload/1/ok.png")["results"]
    assert "cannot fetch" in result["error"]
    for url, words in (("ftp://x", "http(s)://host:port"), ("http://u:p@h:1", "without user")):
        with pytest.raises(LabelStudioError, match=words.replace("(", r"\(").replace(")", r"\)")):
            LabelStudio(url, TOKEN)
    with pytest.raises(LabelStudioError, match="LABEL_STUDIO_API_KEY"):
        LabelStudio(files[0], " ")


def test_bad_requests_are_4xx_with_the_reason(client):
    assert client.post("/labelstudio/predict", json={"label_config": CONFIG}).status_code == 400
    assert "no 'tasks'" in client.post("/labelstudio/predict", json={"tasks": []}).json()["detail"]
    wrong_type = client.post("/labelstudio/predict", content=b"tasks=1", headers={"content-type": "text/plain"})
    assert wrong_type.status_code == 415 and "application/json" in wrong_type.json()["detail"]
    broken = client.post("/labelstudio/predict", content=b"{", headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "not JSON" in broken.json()["detail"]
    huge = client.post("/labelstudio/setup", content=b" " * 5_000_001, headers={"content-type": "application/json"})
    assert huge.status_code == 413


def test_webhook_records_annotations_without_training(client):
    assert client.post("/labelstudio/webhook", json={"project": {"id": 3}}).status_code == 400
    for action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "PROJECT_UPDATED"):
        answer = client.post("/labelstudio/webhook", json={"action": action, "project": {"id": 3}})
        assert answer.status_code == 201
    health = client.get("/labelstudio/health").json()
    assert health["annotation_events"] == 2 and health["last_annotation_event"]


def test_the_token_is_the_basic_auth_password_and_an_open_host_needs_one(colour_rule_onnx, files, monkeypatch):
    studio = LabelStudio(files[0], TOKEN)
    monkeypatch.setenv(TOKEN_ENV, "s3cret")
    guarded = TestClient(create_backend(colour_rule_onnx, SERVE, studio, LABEL_MAP), base_url=LOCAL)
    body = {"project": "1.1", "schema": CONFIG}
    assert guarded.post("/labelstudio/setup", json=body).status_code == 401
    basic = "Basic " + base64.b64encode(b"labelstudio:s3cret").decode()
    assert guarded.post("/labelstudio/setup", json=body, headers={"Authorization": basic}).status_code == 200
    wrong = "Basic " + base64.b64encode(b"labelstudio:guess").decode()
    assert guarded.post("/labelstudio/setup", json=body, headers={"Authorization": wrong}).status_code == 401
    assert guarded.get("/labelstudio/health").status_code == 200  # Label Studio's health check sends no auth
    monkeypatch.delenv(TOKEN_ENV)
    exposed = SERVE.model_copy(update={"host": "0.0.0.0"})
    open_client = TestClient(create_backend(colour_rule_onnx, exposed, studio, LABEL_MAP), base_url=LOCAL)
    answer = open_client.post("/labelstudio/setup", json=body)
    assert answer.status_code == 403 and TOKEN_ENV in answer.json()["detail"]


def test_brush_rle_round_trips_any_mask():
    rng = np.random.default_rng(0)
    for height, width, share in ((1, 1, 1.0), (7, 5, 0.5), (300, 400, 0.0), (257, 300, 0.999)):
        mask = rng.random((height, width)) < share
        assert np.array_equal(decode_brush_rle(encode_brush_rle(mask), height, width, "test"), mask)
    long_run = np.ones((1000, 1000), bool)  # 4 M values: several 2^16-value runs
    assert decode_brush_rle(encode_brush_rle(long_run), 1000, 1000, "test").all()


# --- A real Label Studio ---


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _install_label_studio() -> Path:
    """Label Studio's python (`label_studio_venv.VENV`; `make test` has built it, else now)."""
    try:
        return label_studio_venv.ensure()
    except label_studio_venv.NotInstalled as exc:
        pytest.skip(str(exc))


@contextmanager
def running_label_studio(python: Path, data: Path) -> Iterator[tuple[str, str]]:
    """(URL, token) of Label Studio run by `python` on 127.0.0.1 with the data dir `data`, until the block ends."""
    port, token = _free_port(), "segflow-test-token-0123456789"
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LABEL_STUDIO_USERNAME": "test@segflow.example",
        "LABEL_STUDIO_PASSWORD": "segflow-test-password",
        "LABEL_STUDIO_USER_TOKEN": token,  # a legacy token, so the org must allow those
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        # The backend and the webhook listen on 127.0.0.1, which Label Studio refuses by default (SSRF).
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
    }
    command = [str(python), "-m", "label_studio.server", "start", "--no-browser", "--internal-host", "127.0.0.1"]
    log = (data / "label-studio.log").open("w")
    server = subprocess.Popen(
        [*command, "--port", str(port), "--data-dir", str(data)],
        env=env,
        stdout=log,
        stderr=log,
        start_new_session=True,  # its own process group: stopped whole at the end
    )
    url, start = f"http://127.0.0.1:{port}", time.monotonic()
    try:
        while time.monotonic() - start < 240:
            if server.poll() is not None:
                tail = (data / "label-studio.log").read_text()[-2000:]
                raise RuntimeError(f"Label Studio exited ({server.returncode}): {tail}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise RuntimeError("Label Studio did not answer /health within 240 s")
        print(f"Label Studio {LS_VERSION} answered after {time.monotonic() - start:.1f} s")
        yield url, token
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(URL, token) of a Label Studio started for this module on 127.0.0.1, with a throwaway data dir."""
    with running_label_studio(_install_label_studio(), tmp_path_factory.mktemp("label-studio")) as server:
        yield server


@pytest.fixture(scope="module")
def backend(label_studio, colour_rule_onnx) -> Iterator[tuple[str, FastAPI]]:
    """(URL, app) of segflow's backend on 127.0.0.1, reading photos from that Label Studio."""
    app = create_backend(colour_rule_onnx, SERVE, LabelStudio(*label_studio), LABEL_MAP)
    with live_server(app) as url:
        yield url, app


def test_label_studio_gets_predictions_and_the_corrections_come_back(label_studio, backend, tmp_path):
    url, token = label_studio
    api = httpx.Client(base_url=url, headers={"Authorization": f"Token {token}"}, timeout=120)

    def call(method: str, path: str, **kwargs) -> object:
        answer = api.request(method, path, **kwargs)
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text[:500]}"
        return answer.json() if answer.content else None

    project = call("POST", "/api/projects", json={"title": "segflow", "label_config": CONFIG})["id"]
    photos = {"street.png": scene(90, 120), "unsure.png": uncertain(90, 120), "wide.png": scene(60, 160)}
    uploads = [(name, (name, png(image), "image/png")) for name, image in photos.items()]
    call("POST", f"/api/projects/{project}/import", files=uploads)
    hook = {"project": project, "url": f"{backend[0]}/labelstudio/webhook", "send_payload": True}
    call("POST", "/api/webhooks", json={**hook, "send_for_all_actions": False, "actions": ["ANNOTATION_CREATED"]})
    # Connecting the backend: Label Studio calls its /health and /setup and keeps the version.
    ml = call("POST", "/api/ml", json={"url": f"{backend[0]}/labelstudio", "project": project, "title": "segflow"})
    assert ml["state"] == "CO" and ml["model_version"] == "7", ml

    selected = {"selectedItems": {"all": True, "excluded": []}}
    call("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project}, json=selected)
    tasks = call("GET", "/api/tasks", params={"project": project, "fields": "all"})["tasks"]
    assert len(tasks) == 3
    by_name, scores = {}, {}
    for task in tasks:
        name = next(n for n in photos if task["data"]["image"].endswith(n))
        [prediction] = task["predictions"]
        assert prediction["model_version"] == "7"  # the served version
        by_name[name], scores[name] = (task, prediction), prediction["score"]
    assert min(scores, key=scores.get) == "unsure.png"

    # Least confident first: Label Studio's uncertainty sampling hands out the lowest score of
    # the predictions of the project's model version (which connecting set to the backend's title).
    call("PATCH", f"/api/projects/{project}", json={"sampling": "Uncertainty sampling", "model_version": "7"})
    first = call("GET", f"/api/projects/{project}/next")
    settings = call("GET", f"/api/projects/{project}")
    assert first["id"] == by_name["unsure.png"][0]["id"], (settings["sampling"], settings["model_version"], scores)

    # Annotate: two predictions accepted as they are, one corrected (the sky painted lower).
    corrected = colour_rule_mask(photos["street.png"]) == 1
    corrected[36:45] = True  # the grey band between the sky and the thing
    for name, (task, prediction) in by_name.items():
        result = prediction["result"]
        if name == "street.png":
            sky = next(r for r in result if r["value"]["brushlabels"] == ["Sky"])
            result = [r for r in result if r is not sky]
            result.append({**sky, "value": {**sky["value"], "rle": encode_brush_rle(corrected)}})
        created = call("POST", f"/api/tasks/{task['id']}/annotations/", json={"result": result, "was_cancelled": False})
        if name == "street.png":
            street_annotation, street_result = created["id"], result
    health = httpx.get(f"{backend[0]}/labelstudio/health").json()
    assert health["annotation_events"] == 3  # the webhook heard each one

    # A personal access token (Label Studio's default kind) works too: traded for access tokens.
    personal = call("POST", "/api/token/")["token"]
    assert LabelStudio(url, personal).get(f"/api/projects/{project}")["id"] == project
    with pytest.raises(LabelStudioError, match="refused the token"):
        LabelStudio(url, "not-the-token").get(f"/api/projects/{project}")
    with pytest.raises(LabelStudioError, match=f"no project 999 .*{project} \\('segflow'\\)"):
        pull_annotations(LabelStudio(url, token), 999, tmp_path / "nothing", 10_000_000)

    # Back into the pipeline: pull the finished annotations, read them with segflow's reader.
    out = tmp_path / "labelstudio"
    env = {**os.environ, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": token}
    pull = [str(Path(sys.executable).parent / "segflow"), "pull-annotations", "--project", str(project)]
    pulled = subprocess.run([*pull, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert pulled.returncode == 0, pulled.stdout + pulled.stderr
    assert "3 annotated tasks" in pulled.stdout
    records = {Path(r.filename).name.split("-", 1)[1]: r for r in read_label_studio(out / "label-studio.json")}
    assert sorted(records) == sorted(photos)
    for name, image in photos.items():
        expected = colour_rule_mask(image)
        if name == "street.png":
            expected[corrected] = 1
        for region in records[name].regions:
            index = {"Sky": 1, "Thing": 2}[region.label]
            rle = {"counts": region.geometry["counts"].encode(), "size": region.geometry["size"]}
            assert iou(coco_mask.decode(rle).astype(bool), expected == index) == 1.0, (name, region.label)
        present = {label for label, index in (("Sky", 1), ("Thing", 2)) if (expected == index).any()}
        assert {r.label for r in records[name].regions} == present
    # The folder is a fetch.source as it is: fetch's collect finds the photos and the regions.
    collected = collect(out, FetchParams(annotations=Path("label-studio.json")), Drops())
    assert collected.formats == ["label_studio"] and len(collected.records) == 3 and not collected.uncovered

    # As a project's fetch.source: fetch runs on it; a correction made later and pulled again
    # is a changed dependency of fetch, so `dvc repro` trains on it.
    root = tmp_path / "project"
    root.mkdir()
    project_env = shrunk_clone(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["fetch"].update(source=str(out), annotations=["label-studio.json"])
    params["classes"]["names"] = "auto"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_checked(["dvc", "repro", "fetch"], root, project_env)
    assert "fetch" not in run_checked(["dvc", "status", "fetch"], root, project_env)
    more = corrected.copy()
    more[45:50] = True
    sky = next(r for r in street_result if r["value"]["brushlabels"] == ["Sky"])
    street_result = [r for r in street_result if r is not sky]
    street_result.append({**sky, "value": {**sky["value"], "rle": encode_brush_rle(more)}})
    call("PATCH", f"/api/annotations/{street_annotation}/", json={"result": street_result})
    again = subprocess.run([*pull, "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    status = run_checked(["dvc", "status", "fetch"], root, project_env)
    assert "fetch:" in status and "changed deps" in status and str(out) in status, status
