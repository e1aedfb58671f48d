"""End to end: `dvc pull` + `dvc repro` in a temporary clone, shrunk to tiny images and
one epoch, then the outputs, the MLflow run and the registered version are checked. The
session's clone (conftest.repro_clone) is read, never changed for good: a test that changes
params or reruns gets a copy of its own (conftest.pipeline_copy)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from helpers import run_checked as _run

pytestmark = pytest.mark.slow(seconds=20)


@pytest.fixture
def repro(repro_clone) -> tuple[Path, dict, str]:
    """The session's clone after `dvc pull` + `dvc repro` (conftest.repro_clone)."""
    return repro_clone


def test_every_stage_ran_and_wrote_its_outputs(repro):
    root, _, output = repro
    for stage in ("fetch", "rasterize", "preprocess", "train", "evaluate"):
        assert f"Running stage '{stage}'" in output
    manifest = json.loads((root / "artifacts/fetch/manifest.json").read_text())
    masks = list((root / "artifacts/masks").glob("*.png"))
    assert len(masks) == manifest["images"] > 10
    metrics = json.loads((root / "artifacts/evaluate/metrics.json").read_text())
    assert 0.0 < metrics["test"]["miou"] <= 1.0
    assert set(metrics["test"]["iou"]) == {"background", "sky", "building", "road", "car", "person"}
    assert (root / "artifacts/evaluate/confusion.png").stat().st_size > 1000
    for picture in ("best.png", "worst.png"):
        assert (root / "artifacts/evaluate" / picture).stat().st_size > 1000
    assert len((root / "artifacts/evaluate/per_image.csv").read_text().splitlines()) == metrics["test"]["images"] + 1


def test_mlflow_run_and_registered_candidate(repro):
    root, env, _ = repro
    import mlflow

    store = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    run_info = json.loads((root / "artifacts/train/run.json").read_text())
    run = client.get_run(run_info["run_id"])
    assert run.data.params["train.lr"] == str(yaml.safe_load((root / "params.yaml").read_text())["train"]["lr"])
    assert run.data.params["preprocess.image_size"] == "64"
    assert "test_miou" in run.data.metrics and "val_miou" in run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 1
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    assert run.data.tags["git_commit"] == commit
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    source = {dep["path"]: dep["md5"] for dep in lock["fetch"]["deps"]}["data"]  # fetch.source: data
    assert run.data.tags["data_md5"] == source == lock["sample"]["outs"][0]["md5"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/metrics.json" in artifacts
    version = client.get_model_version_by_alias("segflow-unet", "candidate")
    assert str(version.version) == run_info["model_version"] == "1"
    assert version.run_id == run.info.run_id
    assert (root / "mlartifacts").is_dir() and not (root / "mlruns").exists()
    # The first version is also champion, and the summary says so from the registry.
    summary = " ".join(_run(["segflow", "summary"], root, env).split())
    assert "segflow-unet version 1 (@candidate, @champion)" in summary


@pytest.mark.slow(seconds=75)
def test_a_changed_param_reruns_train_and_evaluate_and_an_experiment_diffs_against_the_commit(pipeline_copy):
    """Nothing changed: nothing reruns; a doubled lr reruns train and evaluate only. Then,
    with that committed, `dvc exp run` of 2 epochs: HEAD holds the 1-epoch run, the workspace
    the experiment, and as Git keeps the metrics and curves (cache: false) DVC reads both."""
    root, env = pipeline_copy
    assert "Running stage" not in _run(["dvc", "repro"], root, env)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["lr"] = params["train"]["lr"] * 2
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = _run(["dvc", "repro"], root, env)
    ran = {
        stage
        for stage in ("fetch", "rasterize", "preprocess", "train", "evaluate")
        if f"Running stage '{stage}'" in output
    }
    assert ran == {"train", "evaluate"}

    _run(["git", "add", "-A"], root, env)
    _run(["git", "commit", "-qm", "lr x2"], root, env)
    _run(["dvc", "exp", "run", "-S", "train.epochs=2"], root, env)
    assert '"epochs": 2' in _run(["dvc", "exp", "show", "--json"], root, env)
    tracked = _run(["git", "ls-files", "artifacts"], root, env).split()
    assert {"artifacts/evaluate/metrics.json", "artifacts/train/history.csv"} <= set(tracked)
    diff = json.loads(_run(["dvc", "metrics", "diff", "--all", "--json"], root, env))
    miou = diff["artifacts/evaluate/metrics.json"]["test.miou"]
    assert isinstance(miou["old"], float) and isinstance(miou["new"], float)
    out = root / "plots-diff"
    _run(["dvc", "plots", "diff", "HEAD", "-o", str(out)], root, env)
    specs = {
        name: json.loads(spec)
        for spec, name in re.findall(
            r"var spec = (\{.*?\});\s*vegaEmbed\('#([^']+)'", (out / "index.html").read_text(), re.S
        )
    }
    assert {"loss", "validation_scores", "convergence", "per-image_test_mIoU", "test_confusion_matrix"} <= set(specs)
    curves = specs["loss"]["data"]["values"]
    # Epoch 2 exists only in the experiment's curve: both sides' data are in the page.
    assert {(row["rev"], row["epoch"]) for row in curves} == {("HEAD", "1"), ("workspace", "1"), ("workspace", "2")}
    confusion = specs["test_confusion_matrix"]["data"]["values"]
    assert {row["rev"] for row in confusion} == {"HEAD", "workspace"} and len(confusion) == 2 * 6 * 6


def test_confusion_matrix_records_are_row_shares(repro):
    root, _, _ = repro
    records = json.loads((root / "artifacts/evaluate/confusion.json").read_text())
    assert len(records) == 36
    for truth in {r["truth"] for r in records}:
        row = [r for r in records if r["truth"] == truth]
        if sum(r["pixels"] for r in row):
            assert sum(r["share"] for r in row) == pytest.approx(1.0, abs=1e-3)


def test_editing_a_module_a_stage_imports_makes_dvc_status_report_that_stage(repro):
    """Deps are the folders and shared modules each stage's script imports (checked by
    tests/test_layout.py), so an edit deep in the import graph reruns the right stages."""
    root, env, _ = repro
    before = _run(["dvc", "status", "--json"], root, env)
    shared = root / "src/segflow/metrics.py"  # picks the best epoch and scores the test split
    original = shared.read_text()
    try:
        shared.write_text(original + "\n# an edit\n")
        changed = json.loads(_run(["dvc", "status", "--json"], root, env))
        assert {"train", "evaluate"} <= set(changed) and not {"fetch", "rasterize", "preprocess"} & set(changed)
        (root / "src/segflow/metrics.py").write_text(original)
        (root / "src/segflow/data/readers/coco.py").write_text(
            (root / "src/segflow/data/readers/coco.py").read_text() + "\n# an edit\n"
        )
        changed = json.loads(_run(["dvc", "status", "--json"], root, env))
        assert {"fetch", "rasterize", "preprocess"} <= set(changed) and "train" not in changed
    finally:
        shared.write_text(original)
        coco = root / "src/segflow/data/readers/coco.py"
        coco.write_text(coco.read_text().removesuffix("\n# an edit\n"))
    assert _run(["dvc", "status", "--json"], root, env) == before
