"""Training losses, chosen by name in params.

``train.loss`` names one loss or a sum of them joined by ``+`` (``ce+dice``). All take
logits (N, C, H, W) and targets (N, H, W) and skip pixels labelled with the ignore index.

====== ==============================================================================
ce     cross-entropy (torch); optional per-class weights against class imbalance
dice   soft Dice (smp.losses.DiceLoss): weighs every class equally, whatever its size
focal  focal loss (smp.losses.FocalLoss): down-weights pixels already classified well
lovasz Lovász-softmax (smp.losses.LovaszLoss): a smooth surrogate of IoU itself
tversky Tversky (smp.losses.TverskyLoss), alpha = beta = 0.5 (= Dice) unless changed
mse    mean squared error between softmax and one-hot masks (an early prototype's loss,
       kept for comparison: it learns rare classes poorly)
====== ==============================================================================
"""

from __future__ import annotations

import numpy as np
import torch
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss, LovaszLoss, TverskyLoss
from torch import nn
from torch.nn import functional as F

from segflow.config import LOSS_TERMS
from segflow.errors import ConfigError

__all__ = ["LOSSES", "CLASS_WEIGHTINGS", "class_weights", "build_loss", "parse_loss"]

#: Loss terms `train.loss` may combine with "+".
LOSSES = LOSS_TERMS
#: How `train.class_weights` turns training pixel shares into cross-entropy weights.
CLASS_WEIGHTINGS = ("none", "inverse", "sqrt_inverse")


class OneHotMSELoss(nn.Module):
    """Mean squared error between class probabilities and one-hot targets."""

    def __init__(self, ignore_index: int) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != self.ignore_index
        probabilities = logits.softmax(1).permute(0, 2, 3, 1)[valid]  # (P, C)
        one_hot = F.one_hot(target[valid], logits.shape[1]).to(probabilities.dtype)
        if probabilities.numel() == 0:
            return logits.sum() * 0.0
        return F.mse_loss(probabilities, one_hot)


class _Sum(nn.Module):
    """Sum of several losses of the same (logits, target) call."""

    def __init__(self, losses: list[nn.Module]) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)


def parse_loss(name: str) -> list[str]:
    """Split ``"ce+dice"`` into its terms, checking each is known."""
    terms = [term.strip() for term in name.split("+")]
    unknown = [term for term in terms if term not in LOSSES]
    if unknown or not terms:
        raise ConfigError(
            f"train.loss: unknown loss {name!r}; use one of {list(LOSSES)} or several joined by '+', e.g. 'ce+dice'"
        )
    return terms


def class_weights(pixel_counts: np.ndarray, weighting: str) -> list[float] | None:
    """Per-class loss weights from training pixel counts (C,); mean weight 1.

    ``inverse`` weighs each class by 1/share, ``sqrt_inverse`` by 1/sqrt(share): the
    square root keeps a class of 1% of the pixels from getting 50x the say of one of
    50%, which makes training unstable. Classes with no pixels get weight 0.
    """
    if weighting == "none":
        return None
    if weighting not in CLASS_WEIGHTINGS:
        raise ConfigError(f"train.class_weights: unknown {weighting!r}; choose from {list(CLASS_WEIGHTINGS)}")
    shares = pixel_counts / max(pixel_counts.sum(), 1)
    power = 1.0 if weighting == "inverse" else 0.5
    weights = np.where(shares > 0, 1.0 / np.maximum(shares, 1e-12) ** power, 0.0)
    present = weights > 0
    weights[present] /= weights[present].mean()
    return [float(w) for w in weights]


def build_loss(name: str, ignore_index: int, weights: list[float] | None = None) -> nn.Module:
    """The loss `name` (see module doc); `weights` apply to the cross-entropy term."""

    def make(term: str) -> nn.Module:
        if term == "ce":
            weight = torch.tensor(weights, dtype=torch.float32) if weights else None
            return nn.CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
        if term == "dice":
            return DiceLoss(mode="multiclass", ignore_index=ignore_index)
        if term == "focal":
            return FocalLoss(mode="multiclass", ignore_index=ignore_index)
        if term == "lovasz":
            return LovaszLoss(mode="multiclass", ignore_index=ignore_index)
        if term == "tversky":
            return TverskyLoss(mode="multiclass", ignore_index=ignore_index)
        return OneHotMSELoss(ignore_index)

    losses = [make(term) for term in parse_loss(name)]
    return losses[0] if len(losses) == 1 else _Sum(losses)
