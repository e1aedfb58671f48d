"""Promote and roll back: the rule, the user's loop through the CLI, concurrent promotes,
and the same loop against an MLflow tracking server over HTTP."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest
import yaml
from helpers import REPO_ROOT, SPLIT_PIXELS
from servers import mlflow_server

from segflow.cli import main
from segflow.config import PromoteParams
from segflow.outputs import file_sha256
from segflow.registry import promote as promote_module
from segflow.registry.champion import HISTORY_TAG, ChampionMoved
from segflow.registry.promote import compare, promote, rollback
from segflow.registry.scoring import Scores

NAN = float("nan")
LABELLED = sum(SPLIT_PIXELS.values())
#: Test mIoU of a version predicting one class everywhere: that class's share, over 3 classes.
MIOU = {name: pixels / LABELLED / 3 for name, pixels in SPLIT_PIXELS.items()}


def scores(iou: list[float], names: tuple[str, ...] = ("a", "b", "c")) -> Scores:
    defined = [v for v in iou if v == v]
    return Scores(list(names), sum(defined) / len(defined), 0.0, 0.0, iou, iou, [], 1, 1.0, 1, 1)


@pytest.mark.parametrize(
    ("candidate", "champion", "rule", "passed"),
    [
        ([0.8, 0.6, 0.5], [0.7, 0.6, 0.5], {}, True),  # better mean, no class worse
        ([0.7, 0.6, 0.5], [0.7, 0.6, 0.5], {}, True),  # equal is "at least as good"
        ([0.72, 0.6, 0.5], [0.7, 0.6, 0.5], {"min_miou_gain": 0.01}, False),  # better, not by the margin
        ([0.9, 0.9, 0.44], [0.7, 0.6, 0.5], {}, False),  # better mean, one class 0.06 worse
        ([0.9, 0.9, 0.44], [0.7, 0.6, 0.5], {"max_class_drop": 0.1}, True),  # ...within a looser rule
        ([0.9, NAN, 0.5], [0.7, 0.1, 0.5], {}, True),  # undefined on one side: skipped
    ],
)
def test_rule(candidate, champion, rule, passed):
    verdict = compare(scores(candidate), scores(champion), PromoteParams(**rule))
    assert verdict.passed is passed
    assert len(verdict.reasons) >= 2


def test_rule_refuses_models_of_other_classes():
    verdict = compare(scores([0.9, 0.9, 0.9]), scores([0.1, 0.1, 0.1], ("a", "b", "z")), PromoteParams())
    assert not verdict.passed and "class names differ" in verdict.reasons[0]


@pytest.fixture
def cli(frozen_split, registry_params, tmp_path, wide_console):
    """Run `segflow ...` on the registry fixtures; returns (exit code, printed text)."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(registry_params.model_dump(mode="json")))

    def run(*args: str, capsys: pytest.CaptureFixture) -> tuple[int, str]:
        with pytest.raises(SystemExit) as exit_code:
            main([*args, "--params", str(params_file), "--artifacts", str(frozen_split)])
        return exit_code.value.code, capsys.readouterr().out

    return run


def champion(client: mlflow.MlflowClient) -> str:
    return str(client.get_registered_model("tiny").aliases["champion"])


def test_promote_refuse_force_and_roll_back(register_version, frozen_split, cli, capsys):
    client = mlflow.MlflowClient()
    background, sky = register_version(0), register_version(1)  # versions 1 (champion), 2
    run_of_sky = client.get_model_version("tiny", sky).run_id

    # Better: mIoU 0.3 against 0.011, and background only 0.033 worse (rule: at most 0.05).
    code, out = cli("promote", "--run", run_of_sky, capsys=capsys)
    assert code == 0 and champion(client) == sky, out
    assert "promoted" in out and f"{MIOU['sky']:.4f}" in out and f"{MIOU['background']:.4f}" in out
    assert "IoU thing" in out and "model size (MB)" in out and "inference (ms / image)" in out
    tags = client.get_model_version("tiny", sky).tags
    assert tags["promote.outcome"] == "promoted"
    assert tags["promote.previous_champion"] == background
    compared = json.loads(tags["promote.metrics"])
    assert compared["candidate"]["miou"] == pytest.approx(MIOU["sky"], abs=1e-5)
    assert compared["champion"]["iou"]["background"] == pytest.approx(64 / 1920, abs=1e-5)
    assert "0.05" in tags["promote.rule"]
    test_files = sorted((frozen_split / "preprocess" / "test").iterdir())  # 00000.image.png, 00000.mask.png, ...
    assert tags["promote.split_sha256"] == file_sha256(*test_files)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()
    assert tags["promote.git_commit"] == head
    [record_file] = (frozen_split / "promotions").glob(f"*-promote-v{sky}.json")
    record = json.loads(record_file.read_text())
    assert (record["champion_before"], record["champion_after"]) == (background, sky)
    assert record["test_split"]["sha256"] == tags["promote.split_sha256"] and record["test_split"]["images"] == 2
    assert record["metrics"]["champion"]["confusion"] == [[64, 0, 0], [1728, 0, 0], [128, 0, 0]]

    # Worse: refused (exit 1), and the champion stays.
    thing = register_version(2)  # version 3, now @candidate
    code, out = cli("promote", capsys=capsys)
    assert code == 1 and champion(client) == sky and "refused" in out
    tags = client.get_model_version("tiny", thing).tags
    assert tags["promote.outcome"] == "refused" and tags["promote.champion_after"] == sky
    assert f"mIoU {MIOU['thing']:.4f} < {MIOU['sky']:.4f}" in tags["promote.reasons"]
    assert "sky IoU 0.0000 is 0.9000 below" in tags["promote.reasons"]

    # ...unless forced.
    code, out = cli("promote", "--version", thing, "--force", capsys=capsys)
    assert code == 0 and champion(client) == thing and "--force" in out
    assert client.get_model_version("tiny", thing).tags["promote.outcome"] == "forced"
    code, out = cli("promote", "--version", thing, capsys=capsys)
    assert code == 0 and "already @champion" in out

    # Back, one champion at a time, then no further.
    code, out = cli("rollback", capsys=capsys)
    assert code == 0 and champion(client) == sky and f"{thing} -> {sky}" in out
    tags = client.get_model_version("tiny", sky).tags
    assert tags["rollback.outcome"] == "rolled back" and tags["rollback.previous_champion"] == thing
    assert "rollback.demoted_at" in client.get_model_version("tiny", thing).tags
    code, _ = cli("rollback", capsys=capsys)
    assert code == 0 and champion(client) == background
    code, out = cli("rollback", capsys=capsys)
    assert code == 1 and "first champion" in out and champion(client) == background
    assert json.loads(client.get_registered_model("tiny").tags[HISTORY_TAG]) == [background]
    names = sorted(path.name.split("-", 1)[1] for path in (frozen_split / "promotions").glob("*.json"))
    assert names == ["promote-v2.json", "promote-v3.json", "promote-v3.json", "rollback-v1.json", "rollback-v2.json"]


def test_a_champion_moved_during_the_comparison_is_not_overwritten(
    register_version,
    frozen_split,
    registry_params,
    tmp_path,
    monkeypatch,
):
    client = mlflow.MlflowClient()
    first, candidate, other = register_version(0), register_version(1), register_version(2)
    real_score = promote_module.score_version

    def score_while_someone_else_promotes(name, version, split, ignore):
        if version == first:  # scoring the champion: another machine moves it meanwhile
            client.set_registered_model_alias("tiny", "champion", other)
        return real_score(name, version, split, ignore)

    monkeypatch.setattr(promote_module, "score_version", score_while_someone_else_promotes)
    with pytest.raises(ChampionMoved, match=f"moved from {first} to {other}"):
        promote(registry_params, frozen_split / "preprocess", tmp_path / "records", tmp_path, version=candidate)
    assert champion(client) == other
    assert "promote.outcome" not in client.get_model_version("tiny", candidate).tags
    assert json.loads(client.get_registered_model("tiny").tags[HISTORY_TAG]) == [first]


def test_two_promotes_at_once_end_in_a_state_one_of_them_asked_for(
    register_version,
    frozen_split,
    registry_params,
    tmp_path,
    monkeypatch,
):
    """Both promotes ask for the champion lock while one of them is comparing (proven by
    events, not sleeps), and at most one is ever inside it."""
    client = mlflow.MlflowClient()
    first, sky, thing = register_version(0), register_version(1), register_version(2)
    real_lock, real_score = promote_module.champion_lock, promote_module.score_version
    asking = {sky: threading.Event(), thing: threading.Event()}
    inside, overlaps, mine = [], [], threading.local()

    @contextmanager
    def watched_lock(name: str) -> Iterator[Path]:
        asking[mine.version].set()  # this promote is about to wait for the lock
        with real_lock(name) as path:
            inside.append(mine.version)
            if len(inside) > 1:
                overlaps.append(list(inside))
            try:
                yield path
            finally:
                inside.remove(mine.version)

    def score_once_both_asked(*args):
        other = thing if mine.version == sky else sky
        assert asking[other].wait(120), "the other promote never asked for the lock"
        return real_score(*args)

    monkeypatch.setattr(promote_module, "champion_lock", watched_lock)
    monkeypatch.setattr(promote_module, "score_version", score_once_both_asked)
    start, decisions, errors = threading.Barrier(2), {}, []

    def run(version: str) -> None:
        mine.version = version
        start.wait()
        try:
            decisions[version] = promote(
                registry_params, frozen_split / "preprocess", tmp_path / "records", tmp_path, version=version
            )
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(v,)) for v in (sky, thing)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and not overlaps, (errors, overlaps)
    # One after the other: the first compared against version 1 and won; the second
    # compared against the first's winner (not the stale version 1) and lost.
    # (sky beats thing on mIoU but drops thing's IoU by 0.067: the order decides.)
    winner, loser = sorted(decisions.values(), key=lambda d: d.champion_before != first)
    assert (winner.champion_before, winner.outcome) == (first, "promoted")
    assert (loser.champion_before, loser.outcome) == (winner.version, "refused")
    assert champion(client) == winner.version
    assert json.loads(client.get_registered_model("tiny").tags[HISTORY_TAG]) == [first, winner.version]


@pytest.mark.slow(seconds=35)
def test_train_register_promote_rollback_against_a_tracking_server(
    frozen_split,
    registry_params,
    register_version,
    tmp_path,
    monkeypatch,
):
    from segflow.training.train import train

    backend, artifacts = f"sqlite:///{tmp_path / 'server.db'}", str(tmp_path / "server-artifacts")
    with mlflow_server(backend, artifacts, tmp_path / "server.log") as url:
        for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            monkeypatch.setenv(variable, url)
        data, records = frozen_split / "preprocess", tmp_path / "records"
        summary = train(registry_params, data, tmp_path / "train", tmp_path, tmp_path / "resume.pt")
        trained = summary["model_version"]
        client = mlflow.MlflowClient()
        assert champion(client) == trained  # the first version ever
        background, sky = register_version(0), register_version(1, data_dir=data)
        # Forced: how a random 1-epoch model compares with "background everywhere" is not known.
        forced = promote(registry_params, data, records, tmp_path, version=background, force=True)
        assert forced.outcome in ("forced", "promoted") and champion(client) == background
        decision = promote(registry_params, data, records, tmp_path, version=sky)
        assert (decision.outcome, decision.champion_before, champion(client)) == ("promoted", background, sky)
        assert promote(registry_params, data, records, tmp_path, version=background).outcome == "refused"
        assert rollback(registry_params, records, tmp_path).champion_after == background
        assert rollback(registry_params, records, tmp_path).champion_after == trained
        assert champion(client) == trained
        tags = client.get_model_version("tiny", sky).tags
        assert tags["promote.outcome"] == "promoted"
        # The evidence went through the server: the record and the model card are artifacts there.
        assert mlflow.artifacts.load_text(tags["promote.record"].split()[-1]).startswith("{")
        assert "# tiny version" in mlflow.artifacts.load_text(tags["model_card"])
        assert list((tmp_path / "server-artifacts").rglob("model_card.md"))
        assert len(list(records.glob("*.json"))) == 5
