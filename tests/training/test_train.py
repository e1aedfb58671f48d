"""Training: determinism, resume after an interruption, MLflow run continuity."""

from __future__ import annotations

import csv
import math

import mlflow
import pytest
import torch
from helpers import two_class_split

from segflow.errors import Interrupted
from segflow.training import trainer as trainer_module
from segflow.training.distributed import ONE_PROCESS
from segflow.training.train import MIN_STEPS, budget_warning, train
from segflow.training.trainer import Trainer, build_scheduler, warmup_decay


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
        train={"epochs": 3, "steps_per_epoch": 4, "batch_size": 3, "lr": 0.01},
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


@pytest.mark.parametrize("scheduler", ["onecycle", "cosine"])
def test_interrupted_run_resumes_to_the_same_result_in_the_same_mlflow_run(
    scheduler, tiny_split, tiny_params, tmp_path, monkeypatch
):
    # Interrupted after 8 of the run's 12 optimizer steps: the schedule resumes mid-way.
    tiny_params = tiny_params.model_copy(
        update={"train": tiny_params.train.model_copy(update={"scheduler": scheduler})}
    )
    reference = train(tiny_params, tiny_split, tmp_path / "ref", tmp_path, tmp_path / "resume-ref.pt")

    real_epoch = trainer_module.Trainer.train_epoch

    def interrupted(self, epoch):
        if epoch == 3:
            raise KeyboardInterrupt  # as Ctrl-C during the last epoch
        return real_epoch(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", interrupted)
    resume = tmp_path / "resume.pt"
    with pytest.raises(
        Interrupted, match=r"interrupted after epoch 2 of 3; rerun \(dvc repro\) to resume from epoch 3"
    ):
        train(tiny_params, tiny_split, tmp_path / "out", tmp_path, resume)
    assert resume.is_file() and not (tmp_path / "out").exists()
    client = mlflow.MlflowClient()
    (stopped,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id], "attributes.status='KILLED'")

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", real_epoch)
    resumed = train(tiny_params, tiny_split, tmp_path / "out", tmp_path, resume)
    assert not resume.exists()
    assert history(tmp_path / "out") == history(tmp_path / "ref")  # the lr column included
    assert [row["steps"] for row in history(tmp_path / "ref")] == [4.0, 8.0, 12.0]  # the convergence plot's x
    lrs = [row["lr"] for row in history(tmp_path / "ref")]
    assert lrs[0] > lrs[1] > lrs[2]  # past the warm-up, decaying over the whole run
    assert resumed["best_val_miou"] == reference["best_val_miou"]
    assert resumed["run_id"] == stopped.info.run_id

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
    with pytest.raises(Interrupted):
        train(tiny_params, tiny_split, tmp_path / "out", tmp_path, tmp_path / "resume.pt")
    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", real_epoch)
    changed = tiny_params.model_copy(update={"train": tiny_params.train.model_copy(update={"lr": 0.02})})
    summary = train(changed, tiny_split, tmp_path / "out", tmp_path, tmp_path / "resume.pt")
    assert summary["epochs_run"] == 3
    client = mlflow.MlflowClient()
    assert client.get_run(summary["run_id"]).data.params["train.lr"] == "0.02"


def test_an_epoch_is_the_same_steps_for_7_and_700_images(tiny_params, tmp_path):
    loaders = {}
    for count in (7, 700):
        folder = two_class_split(tmp_path / str(count), {"train": count, "val": 1, "test": 1}, size=16)
        trainer = Trainer(tiny_params, folder, ONE_PROCESS)
        assert len(trainer.train_set.entries) == count
        loaders[count] = trainer.train_loader
    assert len(loaders[7].dataset) == len(loaders[700].dataset) == 4 * 3  # steps_per_epoch x batch_size
    assert len(loaders[7]) == len(loaders[700]) == tiny_params.train.steps_per_epoch == 4
    assert [len(images) for images, _ in loaders[700]] == [3, 3, 3, 3]


def test_crops_are_drawn_with_replacement_from_seed_epoch_and_item(tiny_params, tiny_split):
    trainer = Trainer(tiny_params, tiny_split, ONE_PROCESS)
    again = Trainer(tiny_params, tiny_split, ONE_PROCESS).train_set
    data = trainer.train_set
    data.set_epoch(2), again.set_epoch(2)
    # 12 items from 6 images: each item is the same from a fresh dataset (a resumed epoch).
    for index in range(len(data)):
        assert torch.equal(data[index][0], again[index][0]) and torch.equal(data[index][1], again[index][1])
    first = data[0][0]
    data.set_epoch(3)
    assert not torch.equal(first, data[0][0])


def test_cosine_and_poly_warm_up_then_decay_over_the_whole_run():
    total, warmup = 100, 5
    cosine = [warmup_decay(step, total, warmup, "cosine") for step in range(total)]
    assert cosine[:5] == [0.2, 0.4, 0.6, 0.8, 1.0]  # linear rise to the peak
    assert cosine[5] == 1.0 and all(a > b for a, b in zip(cosine[5:], cosine[6:]))
    assert math.isclose(cosine[52], 0.5 * (1 + math.cos(math.pi * 47 / 95)))
    poly = [warmup_decay(step, total, warmup, "poly") for step in range(total)]
    assert poly[5] == 1.0 and math.isclose(poly[99], (1 - 94 / 95) ** 0.9)


def test_a_scheduler_restored_mid_run_continues_the_schedule():
    def make():
        optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        return optimizer, build_scheduler(optimizer, "cosine", 0.1, total=40, warmup_fraction=0.1)

    optimizer, scheduler = make()
    lrs = []
    for _ in range(40):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step(), scheduler.step()
    optimizer, scheduler = make()
    for _ in range(17):
        optimizer.step(), scheduler.step()
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    optimizer, scheduler = make()
    optimizer.load_state_dict(state["optimizer"]), scheduler.load_state_dict(state["scheduler"])
    resumed = []
    for _ in range(17, 40):
        resumed.append(optimizer.param_groups[0]["lr"])
        optimizer.step(), scheduler.step()
    assert resumed == lrs[17:]
    assert lrs[3] == pytest.approx(0.1) and lrs[-1] < 0.001  # 4 warm-up steps, then down to ~0


def test_too_few_optimizer_steps_warn_with_the_fix(make_params):
    assert budget_warning(make_params()) is None  # the defaults: 20 x 16 = 320 steps
    message = budget_warning(make_params(train={"epochs": 20, "steps_per_epoch": 1}))
    assert (
        f"only 20 optimizer steps in all (train.epochs 20 x train.steps_per_epoch 1), fewer than {MIN_STEPS}" in message
    )
    assert "raise train.steps_per_epoch or train.epochs" in message
