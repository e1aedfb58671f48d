"""The reproducibility promise, as a user meets it: the committed lock matches the code,
bytecode and editor files never make a stage look changed (while a real edit does), and a
fresh clone with its own folder as `fetch.source` runs `dvc repro` and a queue of two DVC
experiments, every one of them landing in the project's MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO_ROOT, SHARED_DATASETS, run_checked, shrunk_clone

BALLOON = SHARED_DATASETS / "via-heads-balloon"

#: Where stage deps are code or params: never "modified" at a clean commit.
CODE = ("pipeline/", "src/", "scripts/", "params.yaml")


def dvc_status(root: Path, env: dict) -> dict:
    """`dvc status --json`: {stage: [{"changed deps": {path: status}}, ...]}."""
    return json.loads(run_checked(["dvc", "status", "--json"], root, env).strip().splitlines()[-1])


def changed_code(status: dict) -> list[str]:
    """ "stage: path" for every code or params dep that changed (data not pulled is fine)."""
    found = []
    for stage, changes in status.items():
        for change in changes:
            if not isinstance(change, dict):
                continue
            for path, state in (change.get("changed deps") or {}).items():
                # Code: "modified"; params: {"train.lr": "modified", ...}.
                if path.startswith(CODE) and (state == "modified" or isinstance(state, dict)):
                    found.append(f"{stage}: {path}")
            if "changed command" in change:
                found.append(f"{stage}: its command")
    return found


def test_the_committed_lock_matches_the_committed_code(tmp_path):
    """What CI checks first, with no training: a clean clone of HEAD has no stage whose
    code or params changed since dvc.lock was written (commit the lock with the code)."""
    clone = tmp_path / "clone"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run_checked(["git", "clone", "-q", str(REPO_ROOT), str(clone)], tmp_path, env)
    stale = changed_code(dvc_status(clone, env))
    assert not stale, f"dvc.lock is stale at HEAD: run `dvc repro` and commit dvc.lock: {stale}"


def test_bytecode_and_editor_files_never_change_a_stage_but_an_edit_does(tmp_path):
    env = shrunk_clone(tmp_path)
    before = dvc_status(tmp_path, env)
    # Python as users run it (bytecode on) imports every stage's code from this copy.
    with_bytecode = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with_bytecode["PYTHONPATH"] = str(tmp_path / "src")
    imports = "import segflow.cli, segflow.training.train, segflow.data.fetch, segflow.predict.command"
    run_checked([sys.executable, "-c", imports], tmp_path, with_bytecode)
    run_checked([sys.executable, "-m", "compileall", "-q", "pipeline", "scripts"], tmp_path, with_bytecode)
    assert list((tmp_path / "src/segflow/training").glob("__pycache__/*.pyc")), "no bytecode was written"
    (tmp_path / "src/segflow/data/draw.py~").write_text("an editor's backup")
    (tmp_path / "src/segflow/data/.draw.py.swp").write_text("an editor's swap file")
    assert dvc_status(tmp_path, env) == before

    # A real change of code a stage imports (through segflow.data) reruns that stage.
    draw = tmp_path / "src/segflow/data/draw.py"
    draw.write_text(draw.read_text() + "\n# an edit\n")
    changed = changed_code(dvc_status(tmp_path, env))
    assert "fetch: src/segflow/data" in changed and "rasterize: src/segflow/data" in changed


def _wait_for_queue(root: Path, env: dict, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        status = run_checked(["dvc", "queue", "status"], root, env)
        if not any(word in status for word in ("Running", "Queued")):
            return status
        time.sleep(5)
    logs = subprocess.run(["dvc", "queue", "logs", "seed-1"], cwd=root, env=env, capture_output=True, text=True)
    raise AssertionError(f"the queue did not finish in {seconds} s:\n{status}\nseed-1's log:\n{logs.stdout[-3000:]}")


@pytest.mark.slow(seconds=180)
def test_newcomer_path_own_folder_and_a_queue_of_two_experiments(tmp_path):
    """The README's path from `git clone`: own folder as the source (params only, no data/
    and no pull), `dvc repro`, two queued experiments on two workers and one --temp,
    `dvc status` clean, every run and version in the project's MLflow store under DVC's
    experiment names."""
    if not BALLOON.is_dir():
        pytest.skip(f"{BALLOON} is absent (the shared via-heads-balloon dataset)")
    origin = tmp_path / "origin"
    origin.mkdir()
    env = shrunk_clone(origin)
    root = tmp_path / "mine"
    run_checked(["git", "clone", "-q", str(origin), str(root)], tmp_path, env)
    assert not (root / "data").exists()

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["fetch"].update(source=str(BALLOON), annotations=["*/via_region_data.json"], default_label="balloon")
    params["classes"]["names"] = "auto"  # and the palette untouched: a mapping by name
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run_checked(["dvc", "repro"], root, env)
    assert "Running stage 'fetch'" in output and "Running stage 'evaluate'" in output
    assert "names: [background, balloon]" in output  # the class list, printed as valid YAML
    run_checked(["git", "add", "-A"], root, env)
    run_checked(["git", "commit", "-qm", "my balloons"], root, env)

    for seed in (1, 2):
        run_checked(["dvc", "exp", "run", "--queue", "-S", f"seed={seed}", "-n", f"seed-{seed}"], root, env)
    # One thread per worker, as the README says: two trainings on two cores, each spinning
    # OpenMP's default threads, slow each other down tens of times.
    # Its output to a file: the workers inherit dvc's stdout, and a pipe would keep this call
    # waiting until they exit.
    with (tmp_path / "queue-start.log").open("w+") as log:
        started = subprocess.run(
            ["dvc", "queue", "start", "-j", "2"],
            cwd=root,
            env={**env, "OMP_NUM_THREADS": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
        log.seek(0)
        assert started.returncode == 0, f"dvc queue start failed:\n{log.read()}"
    try:
        queue = _wait_for_queue(root, env, 600)
    finally:
        # --kill: a plain stop waits for running tasks, however long they take.
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True, timeout=120)
    assert queue.count("Success") == 2, queue
    # --temp: the same kind of copy, run in the foreground.
    run_checked(["dvc", "exp", "run", "--temp", "-S", "seed=3", "-n", "seed-3"], root, env)
    shown = run_checked(["dvc", "exp", "show", "--no-pager", "--csv"], root, env)
    assert all(f"seed-{seed}" in shown for seed in (1, 2, 3)), shown

    status = dvc_status(root, env)
    assert status == {}, f"dvc status is not clean after the newcomer path: {status}"

    import mlflow

    store = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    runs = client.search_runs([client.get_experiment_by_name("segflow").experiment_id])
    by_exp = {run.data.tags.get("dvc.exp_name"): run for run in runs}
    assert {"seed-1", "seed-2", "seed-3"} <= set(by_exp), [run.data.tags for run in runs]
    baseline = run_checked(["git", "rev-parse", "HEAD"], root, env).strip()
    for name, seed in (("seed-1", 1), ("seed-2", 2), ("seed-3", 3)):
        run = by_exp[name]
        assert run.info.status == "FINISHED" and run.info.run_name == name
        assert run.data.tags["dvc.baseline_rev"] == baseline == run.data.tags["git_commit"]
        assert run.data.tags["git_dirty"] == "true"  # -S seed=... changed params.yaml
        assert run.data.params["seed"] == str(seed)
        assert "test_miou" in run.data.metrics  # the evaluate stage found the run too
    versions = client.search_model_versions("name='segflow-unet'")
    assert {v.tags.get("dvc.exp_name") for v in versions} >= {"seed-1", "seed-2", "seed-3"}
    workspace_run = json.loads((root / "artifacts/train/run.json").read_text())["run_id"]
    assert client.get_run(workspace_run).data.tags["git_dirty"] == "true"  # params edited, not committed then
    models = subprocess.run(
        [str(Path(sys.executable).parent / "segflow"), "models"],
        cwd=root,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
    )
    assert models.returncode == 0 and "seed-1" in models.stdout and "seed-2" in models.stdout, models.stdout
