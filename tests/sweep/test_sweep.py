"""`segflow sweep`: the space's syntax, and a real grid through DVC's queue into MLflow,
stopped mid-trial with Ctrl-C and resumed, its best trial @candidate and judged by the gate."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from helpers import repo_env, run_checked, shrunk_clone

from segflow.errors import ConfigError
from segflow.sweep.driver import OVER_BUDGET
from segflow.sweep.queue import parse_status, queue_status
from segflow.sweep.space import Range, SweepSpec, build_spec, grid_points, parse_assignment

SEGFLOW = str(Path(sys.executable).parent / "segflow")


def test_the_command_line_space():
    assert parse_assignment("train.lr=0.001,0.003") == ("train.lr", [0.001, 0.003])
    assert parse_assignment("model.encoder=resnet18") == ("model.encoder", ["resnet18"])
    assert parse_assignment("train.lr=1e-4..1e-2:log") == ("train.lr", Range(low=1e-4, high=1e-2, log=True))
    assert parse_assignment("train.steps_per_epoch=4..16")[1].integer
    spec = build_spec({"space": dict([parse_assignment("a.b=1,2"), parse_assignment("c=x,y,z")])}, "-S")
    assert spec.mode == "grid" and spec.budget() == 6
    assert grid_points(spec)[:2] == [{"a.b": 1, "c": "x"}, {"a.b": 1, "c": "y"}]
    assert SweepSpec(space={"train.lr": Range(low=0.1, high=1)}, trials=4, seed=3).budget() == 4


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"space": {"train.lr": Range(low=1e-4, high=1e-2)}}, "a range needs a search (--trials N)"),
        ({"space": {"train lr": [1]}}, "is not a params.yaml key"),
        ({"space": {"train.lr": [1]}, "trials": 0}, "trials: Input should be greater than or equal to 1"),
        ({"space": {"train.lr": [1]}, "budget": 3}, "budget: Extra inputs are not permitted"),
    ],
)
def test_a_bad_sweep_names_the_key(raw, says):
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        build_spec(raw, "sweep.yaml")


def test_bad_flags_are_one_line_errors(tmp_path):
    for args, says in (
        (["s", "-S", "train.lr"], "write KEY=VALUES"),
        (["s", "-S", "train.lr=b..1"], "a range's ends must be numbers"),
        (["s/1", "-S", "train.lr=1"], "use letters, digits"),
        (["s", "-S", "train.lr=2..1:log", "--trials", "2"], "must be below high"),
        (["s", "-S", "train.lr=1,2", "--storage", "sqlite:///o.db"], "a grid has none"),
    ):
        done = subprocess.run([SEGFLOW, "sweep", *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1 and says in " ".join(done.stdout.split()), done.stdout + done.stderr
        assert "Traceback" not in done.stderr


def _state(root: Path, name: str = "lr") -> dict:
    path = root / "artifacts/sweeps" / name / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"trials": []}


def _exp_show_metrics(root: Path, env: dict) -> dict[str, dict]:
    """Each named experiment's artifacts/evaluate/metrics.json as `dvc exp show --json` shows it."""
    found: dict[str, dict] = {}

    def walk(node) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            if node.get("name") and isinstance(data, dict) and isinstance(data.get("metrics"), dict):
                metrics = data["metrics"].get("artifacts/evaluate/metrics.json", {}).get("data")
                if metrics:
                    found[node["name"]] = metrics
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(run_checked(["dvc", "exp", "show", "--json"], root, env)))
    return found


@pytest.mark.slow(seconds=130)
def test_a_grid_with_a_bad_trial_is_stopped_resumed_ranked_and_gated(tmp_path):
    env = shrunk_clone(tmp_path)
    root = tmp_path
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(steps_per_epoch=2, batch_size=4)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_checked(["dvc", "repro"], root, env)  # the baseline: its version is the first @champion
    run_checked(["git", "add", "-A"], root, env)
    run_checked(["git", "commit", "-qm", "baseline"], root, env)
    sweep = [SEGFLOW, "sweep", "lr", "-S", "train.lr=0.001,0.01,-1", "--poll", "1"]
    try:
        # One worker: lr-1 finishes, then Ctrl-C lands while lr-2 trains.
        first = subprocess.Popen([*sweep, "-j", "1"], cwd=root, env=env, stdout=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while not any(t["status"] == "success" for t in _state(root)["trials"]):
            assert time.monotonic() < deadline and first.poll() is None, "lr-1 did not finish"
            time.sleep(1)
        first.send_signal(signal.SIGINT)
        out, _ = first.communicate(timeout=180)
        assert first.returncode == 130 and "rerun the same command to resume" in out, out
        stopped = {t["name"]: t["status"] for t in _state(root)["trials"]}
        assert stopped["lr-1"] == "success" and stopped["lr-2"] == "pending", stopped

        second = subprocess.run(
            [*sweep, "-j", "2"], cwd=root, env={**env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=600
        )
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True, timeout=120)
    out = second.stdout
    assert second.returncode == 0, out + second.stderr[-3000:]
    assert "skipped: lr-1" in out, out

    import mlflow

    store = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    experiment = client.get_experiment_by_name("segflow").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`segflow.sweep` = 'lr' and params.`sweep.mode` = 'grid'")
    assert parent.info.status == "FINISHED" and parent.data.tags["sweep.status"] == "finished"
    assert parent.data.params["sweep.budget"] == "3" and json.loads(parent.data.params["sweep.space"]) == {
        "train.lr": [0.001, 0.01, -1]
    }
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    by_name = {run.data.tags["dvc.exp_name"]: run for run in children}
    assert set(by_name) == {"lr-1", "lr-2", "lr-3"}
    assert by_name["lr-1"].info.status == by_name["lr-2"].info.status == "FINISHED"
    assert by_name["lr-3"].info.status == "FAILED" and "train.lr" in by_name["lr-3"].data.tags["sweep.error"]
    finished = client.search_runs([experiment], "tags.`dvc.exp_name` = 'lr-1' and attributes.status = 'FINISHED'")
    assert len(finished) == 1, "the resumed sweep ran lr-1 again"

    rows = list(csv.DictReader((root / "artifacts/sweeps/lr/trials.csv").open()))
    assert [r["status"] for r in rows] == ["success", "success", "failed"]
    scores = {name: by_name[name].data.metrics["best_val_miou"] for name in ("lr-1", "lr-2")}
    best = max(scores, key=scores.get)
    assert rows[0]["trial"] == best and float(rows[0]["val_miou"]) == pytest.approx(scores[best])
    assert rows[0]["rank"] == "1" and rows[2]["rank"] == "" and "train.lr" in rows[2]["error"]
    assert (root / "artifacts/sweeps/lr/trials.png").stat().st_size > 5000
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")}
    assert artifacts == {"sweep/trials.csv", "sweep/trials.png"}

    # DVC's view of the same experiments: `dvc exp show` and MLflow agree on each trial's test score.
    shown = _exp_show_metrics(root, env)
    for name in ("lr-1", "lr-2"):
        assert shown[name]["test"]["miou"] == pytest.approx(by_name[name].data.metrics["test_miou"], abs=1e-5), name

    candidate = client.get_model_version_by_alias("segflow-unet", "candidate")
    assert candidate.run_id == by_name[best].info.run_id
    assert f"segflow promote --version {candidate.version}" in out
    assert f"version {candidate.version} promoted" in out or f"version {candidate.version} refused" in out, out
    assert any((root / "artifacts/promotions").glob("*.json"))


def test_a_task_running_with_no_worker_to_run_it_is_told_apart():
    """`dvc queue status` as DVC 3.67 printed it here after one of two workers was killed with
    its trial: both still Running, one worker active; then with the other done."""
    killed = """Task     Name    Created    Status
ab621d0  w1      02:41 PM   Running
890b889  w2      02:41 PM   Running

Worker status: 1 active, 0 idle
"""
    view = parse_status(killed)
    assert view.tasks["w1"] == ("Running", "ab621d0") and view.busy_workers == 1 and view.unattended()
    done = killed.replace("Running\n\nWorker status: 1", "Success\n\nWorker status: 0")
    assert parse_status(done).status("w2") == "Success" and parse_status(done).unattended()
    both = killed.replace("1 active", "2 active")
    assert not parse_status(both).unattended() and parse_status(both).status("w3") is None
    requeued = both + "c0ffee1  w1      02:45 PM   Failed\n"  # an old row of a name queued again
    assert parse_status(requeued).tasks["w1"].rev == "ab621d0"


def test_the_polled_view_of_the_queue_is_what_dvc_queue_status_prints(tmp_path):
    """The sweep polls through DVC's Python API (one process, no `dvc` start per poll): on a
    real queue it reads the same tasks, revisions and busy workers as the command's output."""
    env = repo_env()
    for command in (["git", "init", "-q", "-b", "main"], ["dvc", "init", "-q"]):
        run_checked(command, tmp_path, env)
    (tmp_path / "params.yaml").write_text("x: 0\n")
    stage = {"stages": {"s": {"cmd": "echo ${x} > out.txt", "params": ["x"], "outs": ["out.txt"]}}}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(stage))
    run_checked(["git", "add", "-A"], tmp_path, env)
    run_checked(["git", "commit", "-qm", "one stage"], tmp_path, env)
    for x in (1, 2):
        run_checked(["dvc", "exp", "run", "--queue", "-S", f"x={x}", "-n", f"x-{x}"], tmp_path, env)
    printed = parse_status(run_checked(["dvc", "queue", "status"], tmp_path, env))
    polled = queue_status(tmp_path)
    assert polled == printed and set(polled.tasks) == {"x-1", "x-2"} and polled.busy_workers == 0
    assert {task.status for task in polled.tasks.values()} == {"Queued"}


def _kill_a_trial_and_its_worker(root: Path, deadline: float) -> str:
    """SIGKILL, as the OOM killer would, the first `dvc exp exec-run` process training in
    `root`'s queue and the queue worker that started it; the name of its experiment."""
    import psutil

    while time.monotonic() < deadline:
        for process in psutil.process_iter(["cmdline"]):
            cmdline = process.info["cmdline"] or []
            infofile = Path(cmdline[cmdline.index("--infofile") + 1]) if "--infofile" in cmdline else None
            if "exec-run" in cmdline and infofile and infofile.resolve().is_relative_to(root.resolve()):
                name = json.loads(infofile.read_text())["name"]
                for doomed in (process, process.parent()):
                    doomed.kill()
                return name
        time.sleep(0.5)
    raise AssertionError("no trial started training")


def _sweep_until_done(command: list[str], root: Path, env: dict, timeout: float) -> tuple[int, str]:
    """Run a sweep; its exit code and output. One that runs past `timeout` fails with its
    output and what DVC's queue looks like, so a hang can be told apart from a slow trial."""
    process = subprocess.Popen(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        status = ["dvc", "queue", "status"]
        queue = subprocess.run(status, cwd=root, env=env, capture_output=True, text=True, timeout=120)
        import psutil

        alive = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])]
        alive = [line for line in alive if "queue-worker" in line or "exec-run" in line]
        raise AssertionError(
            f"the sweep ran past {timeout} s:\n{out[-6000:]}\n{queue.stdout}{queue.stderr}\n" + "\n".join(alive)
        ) from None
    return process.returncode, out


@pytest.mark.slow(seconds=115)
def test_a_search_asks_optuna_and_a_rerun_continues_its_study(tmp_path):
    """A 3-trial TPE search on 2 workers from a fresh clone (no baseline: each trial runs the
    whole pipeline), one of whose workers is killed with its trial (as by the OOM killer: DVC
    then lists the trial as running for ever), then the same command again: the killed trial is
    queued again, and the rerun redoes neither the study nor the trials."""
    env = {**shrunk_clone(tmp_path), "COLUMNS": "200"}
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["train"].update(steps_per_epoch=2, batch_size=4)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_checked(["git", "commit", "-qam", "short"], tmp_path, env)
    search = [SEGFLOW, "sweep", "tpe", "-S", "train.lr=0.001..0.01:log", "-S", "train.loss=ce,ce+dice"]
    search += ["--trials", "3", "--seed", "7", "-j", "2", "--poll", "1", "--no-promote"]
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(_sweep_until_done, search, tmp_path, env, 600)
            killed = _kill_a_trial_and_its_worker(tmp_path, time.monotonic() + 300)
            code, out = first.result()
        assert code == 0, out[-4000:]
        assert f"{killed}: DVC lists it as running but no process" in out, out[-4000:]
        code, again = _sweep_until_done(search, tmp_path, env, 300)
    finally:
        subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert code == 0 and "skipped: tpe-1, tpe-2, tpe-3" in again, again[-3000:]
    assert "segflow promote --version" in again

    import optuna

    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{tmp_path / 'artifacts/sweeps/tpe/optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3  # nothing asked on the rerun
    trials = _state(tmp_path, "tpe")["trials"]
    for trial, asked in zip(trials, study.trials):
        assert trial["params"] == asked.params and trial["val_miou"] == pytest.approx(asked.value)
        assert 0.001 <= trial["params"]["train.lr"] <= 0.01

    import mlflow

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("segflow").experiment_id],
        "tags.`segflow.sweep` = 'tpe' and params.`sweep.mode` = 'tpe'",
    )
    assert parent.data.params["sweep.seed"] == "7" and parent.data.params["sweep.budget"] == "3"
    children = client.search_runs([parent.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(run.data.tags["dvc.exp_name"] for run in children) == ["tpe-1", "tpe-2", "tpe-3"]
    for run, trial in zip(sorted(children, key=lambda r: r.data.tags["dvc.exp_name"]), trials):
        assert float(run.data.params["train.lr"]) == pytest.approx(trial["params"]["train.lr"])
        assert run.data.params["train.loss"] == trial["params"]["train.loss"]


@pytest.mark.slow(seconds=140)
def test_two_processes_share_one_search_through_postgres(postgres_url, tmp_path):
    """`--storage`: the same search started in two clones (two machines' worth) shares one
    Optuna study in PostgreSQL: 3 trials in all, named by the study (no name twice), and only
    the process that ran the study's best trial points @candidate at it."""
    import optuna
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute("CREATE DATABASE shared_sweep")
    storage = postgres_url.rsplit("/", 1)[0] + "/shared_sweep"
    roots, envs = [tmp_path / "a", tmp_path / "b"], []
    for root in roots:
        root.mkdir()
        env = {**shrunk_clone(root), "COLUMNS": "200", "OMP_NUM_THREADS": "1"}
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["train"].update(steps_per_epoch=2, batch_size=4)
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        run_checked(["git", "commit", "-qam", "short"], root, env)
        envs.append(env)
    search = [SEGFLOW, "sweep", "team", "-S", "train.lr=0.001..0.01:log", "--trials", "3", "--seed", "3"]
    search += ["-j", "1", "--poll", "1", "--no-promote", "--storage", storage]
    processes = [
        subprocess.Popen(search, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for root, env in zip(roots, envs)
    ]
    try:
        outs = [process.communicate(timeout=900)[0] for process in processes]
    finally:
        for process, root, env in zip(processes, roots, envs):
            process.kill()
            subprocess.run(["dvc", "queue", "stop", "--kill"], cwd=root, env=env, capture_output=True, timeout=120)
    for process, out in zip(processes, outs):
        assert process.returncode == 0, out[-4000:]

    names = [{t["name"] for t in _state(root, "team")["trials"]} for root in roots]
    assert names[0] and names[1] and not names[0] & names[1], names
    assert names[0] | names[1] == {"team-1", "team-2", "team-3"}
    study = optuna.load_study(study_name="team", storage=storage)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3
    # Both processes may read 2 trials and ask a third at once: the one asked past the budget
    # is told failed and never run (driver._Search.ask), so no name past team-3 exists.
    assert all(t.state.name == "FAIL" and t.user_attrs.get(OVER_BUDGET) for t in study.trials if t not in complete)
    best = f"team-{study.best_trial.number + 1}"
    owner = 0 if best in names[0] else 1
    assert f"best on validation: {best}" in outs[owner], outs[owner][-3000:]
    # The other process finished before the best trial (it crowned its own best so far, which a
    # shared MLflow server's @candidate then leaves for the better one) or after it (it says so).
    other = outs[1 - owner]
    assert "the study's best is team-" in other or "is @candidate" in other, other[-3000:]
    assert len({t.params["train.lr"] for t in complete}) == 3  # each process its own draws

    import mlflow

    for index, root in enumerate(roots):
        store = f"sqlite:///{root / 'mlflow.db'}"
        client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
        try:
            candidate = client.get_model_version_by_alias("segflow-unet", "candidate")
        except mlflow.exceptions.MlflowException:
            candidate = None
        if index == owner:
            assert candidate is not None and client.get_run(candidate.run_id).data.tags["dvc.exp_name"] == best
        else:  # never the study's best, which it did not run
            assert candidate is None or client.get_run(candidate.run_id).data.tags["dvc.exp_name"] != best


def test_a_trial_asked_past_the_budget_is_told_failed_and_never_run():
    """The race of two processes sharing a study, made deterministic: both read 2 trials and
    ask a third; the one whose number is past the budget gets None and is marked."""
    import optuna

    from segflow.sweep import driver

    search = object.__new__(driver._Search)
    space = dict([parse_assignment("train.lr=0.001..0.01:log")])
    search.optuna, search.spec = optuna, build_spec({"space": space, "trials": 3}, "-S")
    search.study = optuna.create_study(direction="maximize")
    for _ in range(2):
        assert search.ask() is not None
    assert search.asked() == 2
    other = search.study.ask()  # the other process, between this one's asked() and ask()
    assert other.number == 2
    assert search.ask() is None
    (late,) = [t for t in search.study.get_trials() if t.number == 3]
    assert late.state.name == "FAIL" and late.user_attrs == {driver.OVER_BUDGET: True}
