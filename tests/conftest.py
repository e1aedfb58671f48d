"""Shared fixtures: the real params.yaml, shrunk, and small annotated datasets."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import (
    REGISTRY_CLASSES,
    REPO_ROOT,
    SERVE_CLASSES,
    SERVE_PALETTE,
    SERVE_SIZE,
    TEAM_BUCKET,
    VIA_HEADER,
    TeamServers,
    merge,
    repo_env,
    run_checked,
    shrunk_clone,
    via_row,
    write_image,
    write_prepared,
)

from segflow.config import Params


def pytest_configure(config: pytest.Config) -> None:
    """Ctrl-C as a user presses it: the tests that send SIGINT to the processes they start
    need those processes to take it. A suite started with SIGINT ignored (a script's
    `make test &`: bash's background jobs ignore it) passes that on to every child, and
    a stage or a sweep sent Ctrl-C then runs to its end; Python's own handler is inherited
    as the default instead."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _seconds(item: pytest.Item) -> float:
    """A test's expected duration: its ``slow(seconds=N)`` mark (what it took in CI on two
    workers), 10 for a slow test without one, 1 for the rest."""
    mark = item.get_closest_marker("slow")
    return 1.0 if mark is None else float(mark.kwargs.get("seconds", 10))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On N pytest-xdist workers (`make test` runs 2): the order that gives each worker the
    same share of the minutes-long tests. ``--dist worksteal`` hands worker k the k-th of N
    equal runs of the collected list and lets an idle worker take the end of another's; so
    the slow tests, longest first, each go to the run with the least expected work so far
    (the LPT rule), at the front of their run, and the fast tests fill the runs in file order.
    Without xdist the order is the files'."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        return
    sizes, left = [], len(items)
    for k in range(workers):  # as worksteal's first distribution splits the list
        sizes.append(left // (workers - k))
        left -= sizes[-1]
    runs: list[list[pytest.Item]] = [[] for _ in range(workers)]
    work = [0.0] * workers
    for item in sorted((item for item in items if _seconds(item) > 1), key=_seconds, reverse=True):
        k = min((k for k in range(workers) if len(runs[k]) < sizes[k]), key=work.__getitem__)
        runs[k].append(item)
        work[k] += _seconds(item)
    placed = {id(item) for run in runs for item in run}
    fast = iter(item for item in items if id(item) not in placed)
    for k in range(workers):
        runs[k].extend(next(fast) for _ in range(sizes[k] - len(runs[k])))
    items[:] = [item for run in runs for item in run]


@pytest.fixture(autouse=True)
def _import_path_kept() -> Iterator[None]:
    """sys.path as it was after each test. A test that leaves a folder in front (e.g. by
    loading a registered model with plain ``mlflow.pyfunc.load_model``: its partial copy of
    segflow) breaks the processes later tests spawn, far from the cause; it fails here."""
    before = list(sys.path)
    yield
    if sys.path != before:
        added = [entry for entry in sys.path if entry not in before]
        sys.path[:] = before
        pytest.fail(f"the test left sys.path changed (added {added}): use segflow.registry.versions.load_pyfunc")


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
    """The repository's params.yaml as a plain dict, with one model (``train.folds: 1``) of
    16 steps per epoch: its ``auto`` would train 5 folds, or on the sample's 6 classes 64 steps,
    on the tests' splits of a few images; the tests of auto (tests/training/test_folds.py)
    ask for it."""
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    raw["train"]["folds"] = 1
    raw["train"]["steps_per_epoch"] = 16
    return raw


@pytest.fixture
def make_params(raw_params):
    """Build validated Params from params.yaml with nested overrides."""

    def build(**overrides) -> Params:
        return Params.model_validate(merge(raw_params, overrides))

    return build


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


@pytest.fixture
def wide_console():
    """rich's console 200 columns wide (it wraps tables at 80 when not on a terminal)."""
    import rich

    console = rich.get_console()
    saved = dict(console.__dict__)
    rich.reconfigure(width=200)
    yield
    console.__dict__ = saved


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
    export_onnx(ColourRule(), path, (SERVE_SIZE, SERVE_SIZE), "torchscript")  # a test double: the fast exporter
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


@pytest.fixture(scope="session")
def repro_clone(tmp_path_factory, worker_id) -> tuple[Path, dict, str]:
    """The repository's files in a fresh git repo, params shrunk (helpers.shrunk_clone), after
    `dvc pull --allow-missing` (as `make run` does) and `dvc repro`: the real pipeline's
    outputs, made once per session, for every xdist worker (the first to ask makes it, under
    a lock, in the folder the workers' temporary folders share; the others wait and read it).
    Returns (root, env, the output of `dvc repro`); tests read it and leave it as they found it.
    A copy as `dvc repro` left it, without its MLflow store, is kept beside it (`pipeline_copy`)."""
    if worker_id == "master":  # no xdist: this session's own temporary folder
        shared = tmp_path_factory.mktemp("shared")
    else:
        shared = tmp_path_factory.getbasetemp().parent
    root, output = shared / "repro-clone", shared / "repro-clone.out"
    with (shared / "repro-clone.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not output.is_file():
            for folder in (root, _pristine(root)):  # a worker that failed half-way
                shutil.rmtree(folder, ignore_errors=True)
            root.mkdir()
            env = shrunk_clone(root)
            run_checked(["dvc", "pull", "--allow-missing", "-q"], root, env)
            done = run_checked(["dvc", "repro"], root, env)
            _copy_pipeline(root, _pristine(root))
            output.write_text(done)
    return root, repo_env(), output.read_text()


def _pristine(clone: Path) -> Path:
    return clone.with_name(clone.name + ".pristine")


def _copy_pipeline(source: Path, target: Path) -> None:
    """The repository at `source` (git, DVC's cache, the pipeline's outputs) copied to `target`
    without its MLflow store (mlflow.db names its artifact folder by absolute path, so a copy
    would log into the original's) or DVC's temporary folder (locks): the copy's first run
    starts a store of its own."""

    def left_out(folder: str, names: list[str]) -> set[str]:
        if Path(folder) == source:
            return {name for name in names if name.startswith("mlflow.db") or name == "mlartifacts"}
        return {"tmp"} & set(names) if Path(folder) == source / ".dvc" else set()

    shutil.copytree(source, target, symlinks=True, ignore=left_out)


@pytest.fixture
def pipeline_copy(repro_clone, tmp_path) -> tuple[Path, dict]:
    """A repository of this test's own as `repro_clone`'s `dvc repro` left it (outputs, lock,
    DVC cache; a fresh MLflow store), with that state committed: for a test that changes params
    and reruns, at the cost of a copy rather than a second `dvc repro` (30-40 s of CPU)."""
    root, env, _ = repro_clone
    copy = tmp_path / "repo"
    _copy_pipeline(_pristine(root), copy)
    run_checked(["git", "add", "-A"], copy, env)
    run_checked(["git", "commit", "-qm", "after repro"], copy, env)
    return copy, env
