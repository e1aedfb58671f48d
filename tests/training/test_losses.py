import numpy as np
import pytest
import torch

from segflow.errors import ConfigError
from segflow.training.losses import LOSSES, build_loss, class_weights, parse_loss


def logits_for(target: torch.Tensor, num_classes: int, confidence: float) -> torch.Tensor:
    """Logits that put `confidence` on the true class (as log-probabilities)."""
    probabilities = torch.full((*target.shape, num_classes), (1 - confidence) / (num_classes - 1))
    probabilities.scatter_(-1, target.clamp(max=num_classes - 1)[..., None], confidence)
    return probabilities.log().permute(0, 3, 1, 2)


@pytest.mark.parametrize("name", [*LOSSES, "ce+dice", "focal+lovasz"])
def test_every_loss_prefers_right_predictions_and_skips_ignored_pixels(name):
    target = torch.tensor([[[0, 1, 2, 255], [2, 2, 1, 0]]])
    loss = build_loss(name, ignore_index=255)
    good = loss(logits_for(target, 3, 0.9), target)
    bad = loss(logits_for(torch.tensor([[[1, 2, 0, 0], [0, 1, 2, 1]]]), 3, 0.9), target)
    assert torch.isfinite(good) and good < bad
    # what the ignored pixel predicts does not matter
    other = logits_for(target, 3, 0.9)
    other[0, :, 0, 3] = torch.tensor([5.0, -5.0, 0.0])
    assert loss(other, target) == pytest.approx(good.item(), abs=1e-6)


def test_mse_on_one_hot_matches_hand_value():
    target = torch.tensor([[[0, 1]]])
    # probabilities [0.9, 0.1] and [0.1, 0.9]: squared errors 0.01 each -> mean 0.01
    assert build_loss("mse", 255)(logits_for(target, 2, 0.9), target).item() == pytest.approx(0.01, rel=1e-5)


def test_class_weights_from_pixel_shares():
    counts = np.array([900, 100, 0])
    # inverse: 1/0.9, 1/0.1 -> normalised to mean 1 over present classes: 0.2, 1.8
    assert class_weights(counts, "inverse") == pytest.approx([0.2, 1.8, 0.0])
    sqrt = class_weights(counts, "sqrt_inverse")
    assert sqrt[1] / sqrt[0] == pytest.approx(3.0) and sqrt[2] == 0.0
    assert class_weights(counts, "none") is None


def test_unknown_loss_lists_choices():
    with pytest.raises(ConfigError, match=r"unknown loss 'hinge'.*'lovasz'"):
        parse_loss("hinge")
