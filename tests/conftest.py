"""Shared fixtures: the real params.yaml, shrunk, and small annotated datasets."""

from __future__ import annotations

import copy
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from segflow.config import Params

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real third-party annotation exports (never copied into the repo).
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture(autouse=True)
def _mlflow_process_uris() -> Iterator[None]:
    """MLflow's process-wide tracking and registry URIs (mlflow.set_tracking_uri,
    set_registry_uri) unset again after each test: one test's store must not become the
    registry of a later test's client (monkeypatch restores the variables, not these)."""
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def raw_params() -> dict:
    """The repository's params.yaml as a plain dict."""
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


@pytest.fixture
def make_params(raw_params):
    """Build validated Params from params.yaml with nested overrides."""

    def build(**overrides) -> Params:
        return Params.model_validate(_merge(raw_params, overrides))

    return build


def write_image(path: Path, width: int = 40, height: int = 30, value: int = 128) -> Path:
    """A plain JPEG with a little texture, so it decodes to a known size."""
    rng = np.random.default_rng(0)
    image = np.full((height, width, 3), value, np.uint8) + rng.integers(0, 20, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return path


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(path: Path, width: int = 30_000, height: int = 30_000) -> Path:
    """A valid 8-bit grey PNG of zeros: 30000x30000 (900 MP, 2.7 GB as RGB) is 3.9 MB on disk
    (at zlib level 1: 1 s to make; the issue's 875 KB is level 9, 3 s). Rows are compressed
    a few MB at a time, so making it never holds the pixels."""
    packer = zlib.compressobj(1)
    row = bytes(1 + width)  # filter byte 0, then the row
    per_block = max(1, (4 << 20) // len(row))
    parts = []
    for top in range(0, height, per_block):
        parts.append(packer.compress(row * min(per_block, height - top)))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )
    return path


def zip_bomb(path: Path, megabytes: int = 300, beside: Path | None = None) -> Path:
    """A zip holding `megabytes` MB of zeros (300 MB -> about 300 KB, under 1 s), plus the
    files of the folder `beside` (a dataset), written a few MB at a time."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as bundle:
        for file in sorted(beside.rglob("*")) if beside else []:
            if file.is_file():
                bundle.write(file, file.relative_to(beside).as_posix())
        with bundle.open("zeros.bin", "w", force_zip64=True) as out:
            block = bytes(1 << 20)
            for _ in range(megabytes):
                out.write(block)
    return path


def peak_rss_mb(command: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Run a Python script's command line (``[script, *args]``) in a fresh interpreter; its
    result and its peak resident memory (VmHWM, MB), read in the process as it exits."""
    wrapper = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "finally:\n"
        "    peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
        "    print(f'VmHWM {int(peak) / 1024:.0f}', file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", wrapper, *map(str, command)], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    peak = float(done.stderr.rsplit("VmHWM ", 1)[1].split()[0])
    return done, peak


VIA_HEADER = "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes"


def via_row(filename: str, count: int, region_id: int, shape: str, label: str) -> str:
    """One VIA CSV row; `shape` and `label` are raw JSON strings (quoted as VIA does)."""
    quote = lambda text: '"' + text.replace('"', '""') + '"'  # noqa: E731
    return ",".join([filename, "100", quote("{}"), str(count), str(region_id), quote(shape), quote(label)])


@pytest.fixture
def via_dataset(tmp_path) -> Path:
    """A folder with two images and a VIA CSV: a car polygon and a sky rect, and a person."""
    source = tmp_path / "data"
    write_image(source / "a.jpg")
    write_image(source / "b.jpg")
    rows = [
        VIA_HEADER,
        via_row("a.jpg", 2, 0, '{"name":"rect","x":0,"y":0,"width":40,"height":10}', '{"label":"sky"}'),
        via_row(
            "a.jpg",
            2,
            1,
            '{"name":"polygon","all_points_x":[5,15,15,5],"all_points_y":[12,12,22,22]}',
            '{"label":"car"}',
        ),
        via_row(
            "b.jpg", 1, 0, '{"name":"polygon","all_points_x":[20,30,25],"all_points_y":[5,5,25]}', '{"label":"person"}'
        ),
    ]
    (source / "via_region_data.csv").write_text("\n".join(rows) + "\n")
    return source


# --- Registry: a tiny frozen split and versions that predict one class everywhere ---

#: Classes of the registry fixtures, and the test-split pixels of each (ignore excluded).
REGISTRY_CLASSES = ["background", "sky", "thing"]
SPLIT_PIXELS = {"background": 64, "sky": 1728, "thing": 128}


@pytest.fixture
def wide_console():
    """rich's console 200 columns wide (it wraps tables at 80 when not on a terminal)."""
    import rich

    console = rich.get_console()
    saved = dict(console.__dict__)
    rich.reconfigure(width=200)
    yield
    console.__dict__ = saved


def write_prepared(folder: Path, splits: dict[str, tuple[np.ndarray, np.ndarray]], size: int = 32) -> Path:
    """A preprocess output folder (`segflow.prepared`'s layout) from arrays per split:
    images (N, H, W, 3) and masks (N, H, W) of `size` px, stored as the preprocess stage
    stores them, with `size` px crops and tiles."""
    from segflow.data.plan import plan_scale
    from segflow.data.preprocess import store
    from segflow.prepared import PLAN, SPLIT_INDEX, Entry, write_plan

    folder.mkdir(parents=True, exist_ok=True)
    write_plan(plan_scale([(size, size)], {}, [], size, 12.0, 512), folder / PLAN)
    index = {}
    for split, (images, masks) in splits.items():
        (folder / split).mkdir(exist_ok=True)
        index[split] = []
        for row, (image, mask) in enumerate(zip(images, masks)):
            entry = Entry(f"{split}{row}.png", *mask.shape, f"{split}/{row:05d}")
            index[split].append(entry.__dict__)
            store(folder, split, entry, image, mask, size)
    (folder / SPLIT_INDEX).write_text(json.dumps(index))
    return folder


def two_class_split(folder: Path, counts: dict[str, int], size: int = 32) -> Path:
    """`write_prepared` of `size` px images of two classes: class 1 below a random line,
    drawn bright; `counts` images per split."""
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in counts.items():
        masks = np.zeros((n, size, size), np.uint8)
        images = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
        for i in range(n):
            top = rng.integers(size // 8, size - size // 8)
            masks[i, top:] = 1
            images[i, top:] += 150
        splits[split] = (images, masks)
    return write_prepared(folder, splits, size)


@pytest.fixture
def frozen_split(tmp_path) -> Path:
    """``artifacts/`` with a preprocess folder of 32 px images; the test split's class
    pixels are exactly SPLIT_PIXELS, and its two bottom rows are ignored."""
    rng = np.random.default_rng(0)
    masks = np.full((2, 32, 32), 1, np.uint8)  # sky
    masks[0, 28:30] = 2
    masks[1, 26:28], masks[1, 28:30] = 2, 0
    masks[:, 30:] = 255
    splits = {
        split: (rng.integers(0, 255, (count, 32, 32, 3), dtype=np.uint8), masks[np.arange(count) % 2])
        for split, count in (("train", 4), ("val", 2), ("test", 2))
    }
    write_prepared(tmp_path / "artifacts" / "preprocess", splits)
    return tmp_path / "artifacts"


@pytest.fixture
def registry_params(make_params, tmp_path, monkeypatch) -> Params:
    """params.yaml shrunk to a small network, with a temporary MLflow store."""
    import mlflow

    # Both variables, and MLflow's process-wide URIs: an earlier test's store would
    # otherwise linger (mlflow.set_registry_uri exports MLFLOW_REGISTRY_URI, which
    # segflow.registry.tracking.configure reads, and a client made before configure() uses the
    # URI set last).
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(variable, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return make_params(
        classes={"names": REGISTRY_CLASSES, "palette": []},
        preprocess={"image_size": 32},
        # A small timm encoder and a light decoder: a 1.5 MB checkpoint, fast on CPU.
        model={"arch": "Linknet", "encoder": "tu-mobilenetv3_small_050", "encoder_weights": None},
        train={"epochs": 1, "batch_size": 2},
        mlflow={"experiment": "registry", "model_name": "tiny"},
    )


@pytest.fixture
def register_version(registry_params, tmp_path):
    """register_version(class_index) registers, in a run of its own, a network that predicts
    that class everywhere (None: random weights); returns the version."""
    import mlflow
    import torch

    from segflow.data.plan import plan_scale
    from segflow.registry import tracking
    from segflow.registry.pyfunc import SegmentationModel
    from segflow.registry.register import record_test_scores, register_model
    from segflow.registry.scoring import load_test_split, score
    from segflow.training.model import checkpoint_meta, model_from_params

    def register(
        class_index: int | None,
        params: Params = registry_params,
        data_dir: Path | None = None,
        record_dir: Path | None = None,
    ) -> str:
        torch.manual_seed(0)
        model = model_from_params(params)
        if class_index is not None:
            head = model.net.segmentation_head[0]
            torch.nn.init.zeros_(head.weight)
            with torch.no_grad():
                head.bias.copy_(
                    10.0 * torch.nn.functional.one_hot(torch.tensor(class_index), len(params.classes.names))
                )
        tracking.configure(tmp_path)
        tags = {"git_commit": "c0ffee", "git_dirty": "false", "data_md5": f"md5-of-v{class_index}"}
        with mlflow.start_run(experiment_id=tracking.experiment_id(params.mlflow.experiment, tmp_path)):
            mlflow.set_tags(tags)
            meta = checkpoint_meta(params, plan_scale([(32, 32)], {}, [], 32, 12.0, 512))
            version = register_model(model.eval(), params, tags, meta, record_dir=record_dir)
            if data_dir is not None:  # what the evaluate stage does next
                from segflow.training.dataset import class_pixel_counts

                split = load_test_split(data_dir)
                names = list(params.classes.names)
                model_view = SegmentationModel().attach(model, 32, (32, 32))
                scores = score(model_view, split, names, params.classes.ignore_index)
                counts = (class_pixel_counts(data_dir, "train", len(names)), np.array(scores.confusion).sum(1))
                record_test_scores(params, version, mlflow.active_run().info.run_id, scores, split.sha256, counts)
            return version

    return register


#: Labels the Cityscapes fixtures draw: classes, a crowd (cargroup), a void label, a
#: label json2labelImg never draws (license plate), and a group that is its own label.
CITYSCAPES_LABELS = [
    "road",
    "sidewalk",
    "building",
    "car",
    "cargroup",
    "person",
    "sky",
    "vegetation",
    "out of roi",
    "ego vehicle",
    "license plate",
    "polegroup",
]


def write_cityscapes(
    root: Path,
    frames: int = 2,
    split: str = "val",
    size: tuple[int, int] = (64, 128),
    objects: int = 12,
    seed: int = 0,
    images: bool = True,
) -> list[Path]:
    """A Cityscapes-layout folder: gtFine/<split>/<city>/*_gtFine_polygons.json (random
    integer polygons, some leaving the image, one object marked deleted) and, with
    `images`, the matching leftImg8bit PNGs. Returns the polygons files."""
    rng = np.random.default_rng(seed)
    height, width = size
    paths = []
    for frame in range(frames):
        objs = []
        for k in range(objects):
            n = int(rng.integers(3, 10))
            centre = rng.uniform([-10, -10], [width + 10, height + 10])
            radius, angle = rng.uniform(2, width / 3, n), np.sort(rng.uniform(0, 2 * np.pi, n))
            polygon = np.round(centre + np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1))
            label = CITYSCAPES_LABELS[k % len(CITYSCAPES_LABELS)]
            objs.append({"label": label, "polygon": polygon.astype(int).tolist(), "deleted": int(k == 5)})
        stem = f"testcity_{frame:06d}_000019"
        path = root / "gtFine" / split / "testcity" / f"{stem}_gtFine_polygons.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"imgHeight": height, "imgWidth": width, "objects": objs}))
        if images:
            write_image(root / "leftImg8bit" / split / "testcity" / f"{stem}_leftImg8bit.png", width, height)
        paths.append(path)
    return paths


# --- Serving: a model whose masks are known in advance, and a live server ---

#: Classes of the serving fixtures. The colour rule paints sky where blue exceeds red by
#: more than 64 levels, thing where red exceeds blue by as much, background elsewhere.
SERVE_CLASSES = ["background", "sky", "thing"]
SERVE_PALETTE = [[90, 90, 90], [70, 130, 180], [220, 20, 60]]
SERVE_SIZE = 64


def colour_rule_mask(image: np.ndarray) -> np.ndarray:
    """What the colour-rule model predicts for an RGB image, computed directly."""
    red, blue = image[..., 0].astype(int), image[..., 2].astype(int)
    mask = np.zeros(image.shape[:2], np.uint8)
    mask[blue - red > 64] = 1
    mask[red - blue > 64] = 2
    return mask


def scene(height: int, width: int) -> np.ndarray:
    """RGB test picture: blue sky over the top 40%, a red thing in the bottom-right quarter."""
    image = np.full((height, width, 3), 128, np.uint8)
    image[: int(0.4 * height)] = (40, 90, 230)
    image[height // 2 :, width // 2 :] = (220, 30, 40)
    return image


@pytest.fixture(scope="session")
def colour_rule_onnx(tmp_path_factory) -> Path:
    """An ONNX model (exported like a real one) whose logits follow the colour rule."""
    import torch

    from segflow.export.export import export_onnx
    from segflow.runtime.onnx_file import write_metadata

    class ColourRule(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            red, blue = x[:, 0:1], x[:, 2:3]
            return torch.cat([torch.full_like(red, 64.0), blue - red, red - blue], 1)

    path = tmp_path_factory.mktemp("colour-rule") / "colour_rule.onnx"
    export_onnx(ColourRule(), path, (SERVE_SIZE, SERVE_SIZE), dynamo=False)  # a test double: the fast exporter
    write_metadata(
        path,
        {
            "name": "colour-rule",
            "version": "7",
            "class_names": SERVE_CLASSES,
            "palette": SERVE_PALETTE,
            "long_side": None,
            "tile": [SERVE_SIZE, SERVE_SIZE],
            "ignore_index": 255,
            "variant": "fp32",
            "test_miou": 0.5,
        },
    )
    return path


@contextmanager
def live_server(app) -> Iterator[str]:
    """Run `app` with uvicorn on a free port of 127.0.0.1 in a thread; yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# --- End to end: the repository in a fresh git repo, shrunk, for `dvc repro` ---


def run_checked(args: list[str], cwd: Path, env: dict, timeout: float = 900) -> str:
    """Run a command; its output, or an AssertionError that shows it (also when it runs past
    `timeout` seconds: a hung command fails its test rather than the whole CI run)."""
    try:
        result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise AssertionError(f"{' '.join(args)} ran past {timeout} s:\n{error.stdout}\n{error.stderr}") from None
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def shrunk_clone(target: Path) -> dict[str, str]:
    """The repository's files (committed or not, minus ignored ones) in a fresh git repo at
    `target`, params.yaml shrunk to 64 px images, one epoch and 2 examples, committed.
    Returns the environment to run commands there: this venv first on PATH, no MLFLOW_*
    variables (runs go to the copy's own mlflow.db unless the caller sets one)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO_ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    run_checked(["git", "init", "-q", "-b", "main"], target, env)
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["preprocess"]["image_size"] = 64
    params["train"]["epochs"] = 1
    params["evaluate"]["examples"] = 2
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_checked(["git", "add", "-A"], target, env)
    run_checked(["git", "commit", "-qm", "tiny"], target, env)
    return env


# --- Team set-up (README "Team setup"): PostgreSQL, an S3 server, a tracking server on both ---

#: The team bucket: MLflow's artifacts under mlflow/, the DVC remote under dvc/.
TEAM_BUCKET = "segflow-team"


@dataclass(frozen=True)
class TeamServers:
    url: str  #: the tracking server: all a client needs (MLFLOW_TRACKING_URI)
    postgres: str  #: its backend store
    s3: str  #: the S3 endpoint holding TEAM_BUCKET


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with an empty database (tests/servers.py)."""
    import pwd

    from servers import POSTGRES_GLOB, postgres, postgres_bin

    if postgres_bin() is None:
        pytest.skip(f"PostgreSQL server binaries not found in {POSTGRES_GLOB} (`make postgres` installs them)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root without a `postgres` user to run PostgreSQL as (`make postgres` creates it)")
    with postgres() as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    """moto's standalone S3 server on 127.0.0.1, with TEAM_BUCKET created."""
    from servers import moto_server, s3_client

    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as endpoint:
        s3_client(endpoint).create_bucket(Bucket=TEAM_BUCKET)
        yield endpoint


@pytest.fixture(scope="session")
def team_servers(postgres_url, s3_endpoint, tmp_path_factory) -> Iterator[TeamServers]:
    """`mlflow server` as the README's team set-up runs it: PostgreSQL backend store,
    artifacts proxied to s3://TEAM_BUCKET/mlflow. Only the server gets S3 credentials."""
    from servers import S3_CREDENTIALS, mlflow_server

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "MLFLOW_REGISTRY", "AWS_"))}
    env.update(S3_CREDENTIALS, MLFLOW_S3_ENDPOINT_URL=s3_endpoint, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = tmp_path_factory.mktemp("team-mlflow") / "server.log"
    with mlflow_server(postgres_url, f"s3://{TEAM_BUCKET}/mlflow", log, env) as url:
        yield TeamServers(url, postgres_url, s3_endpoint)
