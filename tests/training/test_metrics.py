import math

import numpy as np
import pytest
import torch

from segflow.metrics import SegmentationMeter, group_confusions
from segflow.training.evaluate import confusion_records, majority_baseline


def test_iou_and_dice_match_hand_computed_values():
    # truth: 2 rows of class 0, 2 rows of class 1 (4 px wide); prediction gets one
    # class-1 row wrong (predicts 0) and ignores nothing.
    truth = torch.tensor([[0] * 4, [0] * 4, [1] * 4, [1] * 4])
    prediction = torch.tensor([[0] * 4, [0] * 4, [0] * 4, [1] * 4])
    meter = SegmentationMeter(num_classes=2, ignore_index=255)
    meter.update(prediction[None], truth[None])
    scores = meter.compute()
    # class 0: tp 8, fp 4, fn 0 -> IoU 8/12, Dice 16/20; class 1: tp 4, fn 4 -> IoU 4/8, Dice 8/12
    assert scores["iou"] == pytest.approx([8 / 12, 0.5])
    assert scores["dice"] == pytest.approx([0.8, 8 / 12])
    assert scores["miou"] == pytest.approx((8 / 12 + 0.5) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(12 / 16)
    assert meter.confusion.tolist() == [[8, 0], [4, 4]]


def test_confusion_records_give_each_true_class_its_shares():
    # The matrix of the test above, plus a class that never occurs (its row stays 0).
    records = confusion_records(np.array([[8, 0, 0], [4, 4, 0], [0, 0, 0]]), ["a", "b", "c"])
    assert [(r["truth"], r["predicted"], r["pixels"], r["share"]) for r in records] == [
        ("a", "a", 8, 1.0),
        ("a", "b", 0, 0.0),
        ("a", "c", 0, 0.0),
        ("b", "a", 4, 0.5),
        ("b", "b", 4, 0.5),
        ("b", "c", 0, 0.0),
        ("c", "a", 0, 0.0),
        ("c", "b", 0, 0.0),
        ("c", "c", 0, 0.0),
    ]


def test_counts_accumulate_over_images_not_averaged_per_image():
    meter = SegmentationMeter(num_classes=2, ignore_index=255)
    # image 1: 1 pixel of class 1, missed. image 2: 9 pixels of class 1, all found.
    meter.update(torch.tensor([[[0]]]), torch.tensor([[[1]]]))
    meter.update(torch.ones(1, 3, 3, dtype=torch.long), torch.ones(1, 3, 3, dtype=torch.long))
    scores = meter.compute()
    assert scores["iou"][1] == pytest.approx(9 / 10)  # per-image mean would say 0.5


def test_ignored_pixels_do_not_count_and_absent_classes_are_nan():
    truth = torch.tensor([[[0, 0, 255, 255]]])
    prediction = torch.tensor([[[0, 0, 1, 1]]])
    meter = SegmentationMeter(num_classes=3, ignore_index=255)
    meter.update(prediction, truth)
    scores = meter.compute()
    assert scores["iou"][0] == 1.0
    assert math.isnan(scores["iou"][2])
    assert scores["pixel_accuracy"] == 1.0
    assert meter.confusion.sum() == 2


def test_majority_baseline():
    train_counts = np.array([3, 1])  # class 0 is the majority
    confusion = np.array([[1, 0], [2, 0]])  # test truth: one pixel of 0, two of 1
    # predicts 0 everywhere: IoU(0) = 1/3, IoU(1) = 0 -> mIoU 1/6
    assert majority_baseline(train_counts, confusion) == pytest.approx(1 / 6)


def test_scores_from_a_hand_computed_confusion():
    from segflow.metrics import scores_from_confusion

    confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])  # rows truth, columns predicted
    scores = scores_from_confusion(confusion)
    assert scores["iou"][0] == pytest.approx(8 / 11) and scores["iou"][1] == pytest.approx(3 / 6)
    assert math.isnan(scores["iou"][2])  # absent and never predicted: undefined, left out
    assert scores["miou"] == pytest.approx((8 / 11 + 3 / 6) / 2)
    assert scores["dice"][0] == pytest.approx(16 / 19) and scores["pixel_accuracy"] == pytest.approx(11 / 14)


def test_bootstrap_interval_is_present_and_shrinks_with_more_images():
    from segflow.registry.scoring import bootstrap

    rng = np.random.default_rng(0)

    def images(n):  # per-image confusions of a model right on 60-95% of pixels
        right = rng.integers(60, 96, n)
        return np.stack([np.array([[r, 100 - r], [100 - r, r]]) for r in right])

    few, many = bootstrap(images(5)), bootstrap(images(200))
    for found in (few, many):
        low, high = found["miou_ci"]
        assert 0 < low < high < 1 and len(found["iou_ci"]) == 2
    assert many["miou_ci"][1] - many["miou_ci"][0] < 0.5 * (few["miou_ci"][1] - few["miou_ci"][0])


def test_group_confusions_pool_each_group_of_duplicates_into_one_row():
    confusions = np.array([[[1, 0], [0, 1]], [[2, 0], [0, 0]], [[0, 3], [0, 0]], [[5, 0], [0, 5]]])
    pooled = group_confusions(confusions, ["a", "b", "a", "c"])  # images 0 and 2: one scene
    assert pooled.tolist() == [[[1, 3], [0, 1]], [[2, 0], [0, 0]], [[5, 0], [0, 5]]]
    assert (pooled.sum(0) == confusions.sum(0)).all()  # the pooled score is unchanged
    with pytest.raises(ValueError, match="3 group keys for 4 images"):
        group_confusions(confusions, ["a", "b", "c"])
