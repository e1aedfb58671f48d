"""Cross-validation (train.folds): the partition of the non-test images, the ensemble as one
network (checkpoint, pyfunc, ONNX), best-fold mode, and a run resumed in its second fold."""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter

import mlflow
import numpy as np
import pytest
import torch
from helpers import two_class_split, write_prepared

from segflow.errors import ConfigError, Interrupted
from segflow.export.export import export_onnx
from segflow.inference.network import SegmentationEnsemble, SegmentationNet, build_model, load_checkpoint
from segflow.inference.segment import Segmenter, torch_runner
from segflow.prepared import SPLIT_INDEX, entries
from segflow.registry.versions import load_pyfunc
from segflow.runtime.onnx_file import session
from segflow.training import trainer as trainer_module
from segflow.training.evaluate import evaluate
from segflow.training.folds import (
    AUTO_BELOW,
    AUTO_FOLDS,
    AUTO_STEPS,
    LONG_STEPS,
    MANY_CLASSES,
    assign_folds,
    fold_count,
    make_folds,
    mask_classes,
    step_count,
)
from segflow.training.train import train

SIZE = 32


@pytest.fixture
def pooled_split(tmp_path):
    """6 train + 3 val + 2 test images of 32 px; train images 0-2 are near duplicates
    (one group), as are train 3-4, and val 0-1."""
    folder = two_class_split(tmp_path / "pre", {"train": 6, "val": 3, "test": 2}, size=SIZE)
    index = json.loads((folder / SPLIT_INDEX).read_text())
    for split, rows, key in (("train", (0, 1, 2), "a"), ("train", (3, 4), "b"), ("val", (0, 1), "c")):
        for row in rows:
            index[split][row]["group"] = key
    (folder / SPLIT_INDEX).write_text(json.dumps(index))
    return folder


@pytest.fixture
def fold_params(make_params, tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for variable in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.setenv(variable, uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)

    def build(**train):
        return make_params(
            classes={"names": ["background", "thing"], "palette": []},
            preprocess={"image_size": SIZE},
            model={"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
            train={"epochs": 2, "steps_per_epoch": 2, "batch_size": 2, "lr": 0.01, "folds": 2} | train,
            mlflow={"experiment": "folds", "model_name": "tiny"},
        )

    return build


def history(out):
    with (out / "history.csv").open() as stream:
        return [
            {k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in csv.DictReader(stream)
        ]


def test_auto_is_five_folds_below_fifty_photos_and_one_model_from_there(pooled_split, tmp_path):
    # 9 train + val photos in 5 groups of near duplicates (3, 2, 2, 1, 1 photos): 5 folds,
    # one group each, largest first.
    folds = make_folds(pooled_split, "auto", seed=0)
    assert AUTO_FOLDS == 5 and [len(fold.val) for fold in folds] == [3, 2, 2, 1, 1]
    assert fold_count(pooled_split, 2) == 2
    # AUTO_BELOW photos: one model on the split's own train and val.
    large = two_class_split(tmp_path / "large", {"train": AUTO_BELOW - 5, "val": 5, "test": 1}, size=8)
    assert fold_count(large, "auto") == 1
    (fold,) = make_folds(large, "auto", seed=0)
    assert fold.val == tuple(entries(large, "val")) and fold.seed == 0
    # Fewer groups than 5 folds: one fold per group.
    index = json.loads((pooled_split / SPLIT_INDEX).read_text())
    for split in ("train", "val"):
        for row, item in enumerate(index[split]):
            item["group"] = "a" if row % 2 else "b"
    (pooled_split / SPLIT_INDEX).write_text(json.dumps(index))
    assert fold_count(pooled_split, "auto") == 2


def striped_split(folder, counts, classes, size=SIZE):
    """`write_prepared` of random images whose masks hold `classes` classes, one horizontal
    stripe each."""
    rng = np.random.default_rng(0)
    stripes = (np.arange(size) * classes // size).astype(np.uint8)[:, None].repeat(size, 1)
    splits = {
        split: (rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8), np.stack([stripes] * n))
        for split, n in counts.items()
    }
    return write_prepared(folder, splits, size)


@pytest.mark.parametrize("classes", [2, MANY_CLASSES - 1, MANY_CLASSES, 11])
def test_auto_spends_a_small_set_on_folds_or_on_steps_by_its_classes(tmp_path, classes):
    # 9 train + val photos: 5 folds of 16 steps per epoch, or with MANY_CLASSES classes or
    # more (coins: 11) one model of 4x the steps.
    small = striped_split(tmp_path / "small", {"train": 6, "val": 3, "test": 1}, classes)
    many = classes >= MANY_CLASSES
    assert mask_classes(small) == classes
    assert fold_count(small, "auto") == (1 if many else AUTO_FOLDS)
    assert step_count(small, "auto", "auto") == step_count(small, "auto", 1) == (LONG_STEPS if many else AUTO_STEPS)
    assert (AUTO_STEPS, LONG_STEPS) == (16, 64)
    # Numbers set by hand win; K > 1 folds by number keep 16 steps (not 4K x the time).
    assert fold_count(small, 3) == 3 and step_count(small, "auto", 3) == AUTO_STEPS
    assert step_count(small, 8, "auto") == 8
    # AUTO_BELOW photos: one model of 16 steps, whatever the classes.
    large = striped_split(tmp_path / "large", {"train": AUTO_BELOW - 5, "val": 5, "test": 1}, classes, size=8)
    assert fold_count(large, "auto") == 1 and step_count(large, "auto", "auto") == AUTO_STEPS


def test_the_ignore_value_is_no_class_and_test_masks_are_not_read(tmp_path):
    small = striped_split(tmp_path / "small", {"train": 6, "val": 3}, MANY_CLASSES)
    rich = striped_split(tmp_path / "rich", {"test": 1}, 11)  # a test mask of 11 classes
    (small / "test").mkdir()
    for path in (rich / "test").iterdir():
        path.rename(small / "test" / path.name)
    index = json.loads((small / SPLIT_INDEX).read_text()) | json.loads((rich / SPLIT_INDEX).read_text())
    (small / SPLIT_INDEX).write_text(json.dumps(index))
    assert mask_classes(small) == MANY_CLASSES
    # The highest stripe as the ignore value: one class fewer, and 5 folds again.
    assert mask_classes(small, ignore_index=MANY_CLASSES - 1) == MANY_CLASSES - 1
    assert fold_count(small, "auto", ignore_index=MANY_CLASSES - 1) == AUTO_FOLDS


def test_auto_trains_one_model_of_four_times_the_steps_on_many_classes_and_says_so(
    fold_params, make_params, tmp_path, caplog
):
    caplog.set_level(logging.INFO, "segflow")
    folder = striped_split(tmp_path / "pre", {"train": 6, "val": 3, "test": 1}, MANY_CLASSES)
    params = make_params(
        classes={"names": ["background", *(f"c{index}" for index in range(1, MANY_CLASSES))], "palette": []},
        preprocess={"image_size": SIZE},
        model={"arch": "Unet", "encoder": "resnet18", "encoder_weights": None},
        train={"epochs": 1, "steps_per_epoch": "auto", "batch_size": 2, "lr": 0.01, "folds": "auto"},
        mlflow={"experiment": "folds", "model_name": "tiny"},
    )
    summary = train(params, folder, tmp_path / "out", tmp_path, tmp_path / "resume.pt")
    assert "cv" not in summary  # one model
    assert [row["steps"] for row in history(tmp_path / "out")] == [str(LONG_STEPS)]
    assert (
        f"train.steps_per_epoch auto: 64 (4x 16) for one model on 9 train + val photos (under 50) of "
        f"{MANY_CLASSES} classes ({MANY_CLASSES} or more)" in caplog.text
    )
    assert "train.folds auto" not in caplog.text
    run = mlflow.MlflowClient().get_run(summary["run_id"])
    assert run.data.params["train.steps_per_epoch"] == str(LONG_STEPS)  # what ran, not "auto"


def test_auto_trains_five_folds_on_nine_photos_and_says_so(pooled_split, fold_params, tmp_path, caplog):
    caplog.set_level(logging.INFO, "segflow")
    params = fold_params(folds="auto", epochs=1, steps_per_epoch=1)
    summary = train(params, pooled_split, tmp_path / "out", tmp_path, tmp_path / "resume.pt")
    assert [fold["fold"] for fold in summary["cv"]["per_fold"]] == [1, 2, 3, 4, 5]
    assert "train.folds auto: 5 folds for 9 train + val photos (under 50)" in caplog.text
    assert len(load_checkpoint(tmp_path / "out" / "model.pt")[0].members) == 5


def test_train_folds_takes_a_number_or_auto(make_params):
    assert make_params().train.folds == 1  # the tests' base (conftest.raw_params)
    assert make_params(train={"folds": "auto"}).train.folds == "auto"
    for bad in (0, 21, "three"):
        with pytest.raises(ValueError, match="folds"):
            make_params(train={"folds": bad})


@pytest.mark.parametrize("count", [2, 3])
def test_folds_partition_the_non_test_images_with_groups_whole(pooled_split, count):
    folds = make_folds(pooled_split, count, seed=0)
    pooled = entries(pooled_split, "train") + entries(pooled_split, "val")
    test = set(entries(pooled_split, "test"))
    assert [fold.index for fold in folds] == list(range(count))
    # Every non-test image in exactly one validation fold, and trained on in all the others.
    assert Counter(e for fold in folds for e in fold.val) == Counter(pooled)
    for fold in folds:
        assert set(fold.train) | set(fold.val) == set(pooled) and not set(fold.train) & set(fold.val)
        assert not (set(fold.train) | set(fold.val)) & test  # the test split untouched
    # Near duplicates share a fold: 3 + 2 + 2 images in groups, and 4 images alone.
    group_of = {e.filename: k for e, k in zip(pooled, ["a", "a", "a", "b", "b", "x", "c", "c", "y"])}
    for key in "abc":
        assert len({fold.index for fold in folds for e in fold.val if group_of[e.filename] == key}) == 1
    sizes = sorted(len(fold.val) for fold in folds)
    assert sum(sizes) == 9 and sizes[-1] - sizes[0] <= 3  # balanced up to the largest group
    assert len({fold.seed for fold in folds}) == count  # the K models start differently
    assert make_folds(pooled_split, count, seed=0) == folds  # seeded: the same every run


def test_one_fold_is_the_preprocess_split_as_it_is(pooled_split):
    (fold,) = make_folds(pooled_split, 1, seed=7)
    assert list(fold.train) == entries(pooled_split, "train") and list(fold.val) == entries(pooled_split, "val")
    assert fold.seed == 7


def test_the_seed_shuffles_the_groups_and_too_many_folds_is_an_error():
    keys = [str(i) for i in range(20)]
    assert assign_folds(keys, 4, seed=0) != assign_folds(keys, 4, seed=1)
    assert sorted(Counter(assign_folds(keys, 4, seed=0)).values()) == [5, 5, 5, 5]
    with pytest.raises(ConfigError, match="train.folds: 4 folds need at least 4 groups.*hold 3: lower train.folds"):
        assign_folds(["a", "a", "b", "c"], 4, seed=0)


def test_the_ensemble_is_the_mean_softmax_and_survives_its_checkpoint(tmp_path):
    torch.manual_seed(0)
    members = [build_model("Unet", "resnet18", 3).eval() for _ in range(3)]
    ensemble = SegmentationEnsemble(members).eval()
    x = torch.rand(2, 3, 64, 96) * 255
    with torch.inference_mode():
        expected = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        output = ensemble(x)
    torch.testing.assert_close(output.exp(), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(output.softmax(1), expected, atol=1e-6, rtol=1e-5)  # logits downstream

    from segflow.inference.network import CheckpointMeta, save_checkpoint

    save_checkpoint(ensemble, tmp_path / "model.pt", CheckpointMeta("Unet", "resnet18", tuple("abc"), None, (64, 64)))
    loaded, meta = load_checkpoint(tmp_path / "model.pt")
    assert isinstance(loaded, SegmentationEnsemble) and len(loaded.members) == 3 and meta.members == 3
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), output)


def test_a_two_fold_run_registers_one_ensemble_the_pyfunc_and_onnx_agree_with(pooled_split, fold_params, tmp_path):
    params = fold_params()
    summary = train(params, pooled_split, tmp_path / "out", tmp_path, tmp_path / "resume.pt")
    cv = summary["cv"]
    assert cv["folds"] == 2 and cv["model"] == "ensemble" and cv["images"] == 9
    assert [f["fold"] for f in cv["per_fold"]] == [1, 2] and sum(f["val_images"] for f in cv["per_fold"]) == 9
    scores = [f["best_miou"] for f in cv["per_fold"]]
    assert cv["miou_mean"] == pytest.approx(np.mean(scores)) and cv["miou_std"] == pytest.approx(np.std(scores, ddof=1))
    assert summary["best_val_miou"] == cv["miou_mean"] and summary["epochs_run"] == 4
    assert json.loads((tmp_path / "out" / "run.json").read_text()) == summary
    rows = history(tmp_path / "out")
    assert [(r["fold"], r["epoch"]) for r in rows] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]

    client = mlflow.MlflowClient()
    (version,) = client.search_model_versions("name='tiny'")  # one model registered
    assert str(version.version) == summary["model_version"]
    logged = client.get_run(summary["run_id"]).data.metrics
    assert logged["cv_miou_mean"] == pytest.approx(cv["miou_mean"]) and "fold2_val_miou" in logged

    net, meta = load_checkpoint(tmp_path / "out" / "model.pt")
    assert isinstance(net, SegmentationEnsemble) and len(net.members) == 2 and meta.folds == 2
    image = np.random.default_rng(3).integers(0, 255, (45, 70, 3), dtype=np.uint8)
    segmenter = Segmenter(torch_runner(net), meta.long_side, meta.tile)
    expected = segmenter.predict_one(image)
    registered = load_pyfunc(f"models:/tiny/{version.version}")
    np.testing.assert_array_equal(registered.predict(image), expected)

    onnx_file = export_onnx(net, tmp_path / "model.onnx", meta.tile)
    x = np.random.default_rng(2).uniform(0, 255, (2, 3, 64, 96)).astype(np.float32)
    logits, mask = session(onnx_file).run(["logits", "mask"], {"image": x})
    with torch.inference_mode():
        reference = net(torch.from_numpy(x)).numpy()
    assert np.abs(logits - reference).max() < 1e-3 * max(1.0, np.abs(reference).max())
    assert (mask == reference.argmax(1)).mean() > 0.999

    metrics = evaluate(params, pooled_split, tmp_path / "out", tmp_path / "evaluate", root=tmp_path)
    assert metrics["cv"]["miou_mean"] == pytest.approx(cv["miou_mean"], abs=1e-5) and metrics["test"]["images"] == 2


def test_best_fold_mode_registers_the_fold_with_the_best_validation_miou(pooled_split, fold_params, tmp_path):
    ensemble = train(fold_params(), pooled_split, tmp_path / "ens", tmp_path, tmp_path / "resume.pt")
    members = load_checkpoint(tmp_path / "ens" / "model.pt")[0].members
    summary = train(fold_params(fold_model="best"), pooled_split, tmp_path / "best", tmp_path, tmp_path / "r.pt")
    per_fold = summary["cv"]["per_fold"]
    assert per_fold == ensemble["cv"]["per_fold"]  # the same folds trained the same way
    best = max(per_fold, key=lambda f: f["best_miou"])
    assert len({f["best_miou"] for f in per_fold}) == 2  # no tie: the choice is the score's
    assert summary["cv"]["fold"] == best["fold"] and summary["best_val_miou"] == best["best_miou"]
    assert summary["best_epoch"] == best["best_epoch"]
    net, meta = load_checkpoint(tmp_path / "best" / "model.pt")
    assert isinstance(net, SegmentationNet) and meta.fold == best["fold"] and meta.members is None
    chosen = members[best["fold"] - 1].state_dict()
    assert all(torch.equal(value, chosen[key]) for key, value in net.state_dict().items())


def test_a_run_interrupted_in_its_second_fold_resumes_there_to_the_same_result(
    pooled_split, fold_params, tmp_path, monkeypatch
):
    params = fold_params()
    reference = train(params, pooled_split, tmp_path / "ref", tmp_path, tmp_path / "resume-ref.pt")

    real_epoch = trainer_module.Trainer.train_epoch
    calls = []

    def interrupted(self, epoch):
        calls.append((self.fold.number, epoch))
        if (self.fold.number, epoch) == (2, 2):
            raise KeyboardInterrupt
        return real_epoch(self, epoch)

    monkeypatch.setattr(trainer_module.Trainer, "train_epoch", interrupted)
    resume = tmp_path / "resume.pt"
    message = r"interrupted in fold 2 of 2 after epoch 1 of 2; rerun \(dvc repro\) to resume from epoch 2 of fold 2"
    with pytest.raises(Interrupted, match=message):
        train(params, pooled_split, tmp_path / "out", tmp_path, resume)
    assert resume.is_file() and not (tmp_path / "out").exists()

    calls.clear()
    monkeypatch.setattr(
        trainer_module.Trainer, "train_epoch", lambda self, epoch: calls.append(epoch) or real_epoch(self, epoch)
    )
    resumed = train(params, pooled_split, tmp_path / "out", tmp_path, resume)
    assert calls == [2]  # fold 1 was not trained again, nor fold 2's first epoch
    assert not resume.exists()
    assert history(tmp_path / "out") == history(tmp_path / "ref")
    assert resumed["cv"] == reference["cv"] and resumed["run_id"] != reference["run_id"]
    ours, theirs = load_checkpoint(tmp_path / "out" / "model.pt")[0], load_checkpoint(tmp_path / "ref" / "model.pt")[0]
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    client = mlflow.MlflowClient()
    assert client.get_run(resumed["run_id"]).info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(resumed["run_id"], "fold2_train_loss")] == [1, 2]
