"""Training: determinism, resume after an interruption, MLflow run continuity."""

from __future__ import annotations

import csv

import mlflow
import pytest
from conftest import two_class_split

from segflow.training import trainer as trainer_module
from segflow.training.train import train


@pytest.fixture
def tiny_split(tmp_path):
    """A preprocess folder of 32 px images of two classes (class 1 below a random line)."""
    return two_class_split(tmp_path / "pre", {"train": 6, "val": 2, "test": 2})


@pytest.fixture
def tiny_params(make_params, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return make_params(
        classes={"names": ["background", "thing"], "palette": []},
        preprocess={"image_size": 32},
        train={"epochs": 3, "batch_size": 3, "lr": 0.01},
        mlflow={"experiment": "tiny", "model_name": "tiny"},
    )


def history(out):
    with (out / "history.csv").open() as stream:
        return [
            {k: float(v) for k, v in row.items() if k not in ("seconds", "images_per_s")}
            for row in csv.DictReader(stream)
        ]


def test_same_seed_gives_the_same_training(tiny_split, tiny_params, tmp_path):
    first = train(tiny_params, tiny_split, tmp_path / "a", tmp_path, tmp_path / "resume.pt")
    second = train(tiny_params, tiny_split, tmp_path / "b", tmp_path, tmp_path / "resume.pt")
    # Exact on CPU: deterministic algorithms, and every random draw seeded from params.seed.
    assert history(tmp_path / "a") == history(tmp_path / "b")
    assert first["best_val_miou"] == second["best_val_miou"]
    assert first["run_id"] != second["run_id"]


def test_interrupted_run_resumes_to_the_same_result_in_the_same_mlflow_run(
    tiny_split, tiny_params, tmp_path, monkeypatch
):
    reference = train(tiny_params, tiny_split, tmp_path / "ref", tmp_path, tmp_path / "resume-ref.pt")

    real_epoch = trainer_module.Trainer.train_epoch

    def interrupted(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt  # as Ctrl-C during the last epoch
        return real_epoch(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", interrupted)
    resume = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_params, tiny_split, tmp_path / "out", tmp_path, resume)
    assert resume.is_file() and not (tmp_path / "out").exists()

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", real_epoch)
    resumed = train(tiny_params, tiny_split, tmp_path / "out", tmp_path, resume)
    assert not resume.exists()
    assert history(tmp_path / "out") == history(tmp_path / "ref")
    assert resumed["best_val_miou"] == reference["best_val_miou"]

    client = mlflow.MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 2  # the reference and the resumed one: no duplicate
    steps = [m.step for m in client.get_metric_history(resumed["run_id"], "train_loss")]
    assert steps == [1, 2, 3]
    assert client.get_run(resumed["run_id"]).info.status == "FINISHED"


def test_changed_params_do_not_resume_a_stale_file(tiny_split, tiny_params, make_params, tmp_path, monkeypatch):
    real_epoch = trainer_module.Trainer.train_epoch

    def stop_at_two(self, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", stop_at_two)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_params, tiny_split, tmp_path / "out", tmp_path, tmp_path / "resume.pt")
    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", real_epoch)
    changed = tiny_params.model_copy(update={"train": tiny_params.train.model_copy(update={"lr": 0.02})})
    summary = train(changed, tiny_split, tmp_path / "out", tmp_path, tmp_path / "resume.pt")
    assert summary["epochs_run"] == 3
    client = mlflow.MlflowClient()
    assert client.get_run(summary["run_id"]).data.params["train.lr"] == "0.02"
