"""What the tests share besides fixtures (those are in conftest.py): sample files and
bombs, the colour-rule model's scene, a live server, the shrunk clone of the repository,
paths. Imported as `helpers` (pyproject: pytest's pythonpath holds tests/)."""

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
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


#: Real third-party annotation exports (never copied into the repo).
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
#: The shared CVAT coins export (29 photos, 11 classes), read by several test modules.
COINS = SHARED_DATASETS / "cvat-coins-polygons" / "data"


def merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


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


#: Classes of the registry fixtures, and the test-split pixels of each (ignore excluded).
REGISTRY_CLASSES = ["background", "sky", "thing"]


SPLIT_PIXELS = {"background": 64, "sky": 1728, "thing": 128}


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


def repo_env() -> dict[str, str]:
    """The environment for git and dvc in a throwaway repository: this venv first on PATH, no
    MLFLOW_* variables, a git identity to commit with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    return env


def shrunk_clone(target: Path) -> dict[str, str]:
    """The repository's files (committed or not, minus ignored ones) in a fresh git repo at
    `target`, params.yaml shrunk to 64 px images, one epoch, one model (no folds) and 2
    examples, committed. Returns the environment to run commands there: this venv first on
    PATH, no MLFLOW_* variables (runs go to the copy's own mlflow.db unless the caller sets one)."""
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
    env = repo_env()
    run_checked(["git", "init", "-q", "-b", "main"], target, env)
    params = yaml.safe_load((target / "params.yaml").read_text())
    params["preprocess"]["image_size"] = 64
    params["train"]["epochs"] = 1
    params["train"]["folds"] = 1  # one model: a set under 50 photos (the balloons) would train 5
    params["evaluate"]["examples"] = 2
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_checked(["git", "add", "-A"], target, env)
    run_checked(["git", "commit", "-qm", "tiny"], target, env)
    return env


#: The team bucket: MLflow's artifacts under mlflow/, the DVC remote under dvc/.
TEAM_BUCKET = "segflow-team"


@dataclass(frozen=True)
class TeamServers:
    url: str  #: the tracking server: all a client needs (MLFLOW_TRACKING_URI)
    postgres: str  #: its backend store
    s3: str  #: the S3 endpoint holding TEAM_BUCKET


def child_import_error(module: str = "segflow.config") -> str:
    """The error a Python started with this process's sys.path (as a multiprocessing spawn
    or a DataLoader worker is) meets importing `module`; "" when it imports."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(entry for entry in sys.path if entry)}
    command = [sys.executable, "-c", f"import {module}"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    return "" if done.returncode == 0 else done.stderr.strip().splitlines()[-1]
