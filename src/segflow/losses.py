"""Training losses, from smp.losses and torch, chosen by name in params."""
from __future__ import annotations

import torch
from segmentation_models_pytorch.losses import DiceLoss
from torch import nn

from segflow.errors import ConfigError

__all__ = ["LOSSES", "build_loss"]

#: Loss names accepted by `train.loss`.
LOSSES = ("ce", "dice", "ce+dice")


class _Sum(nn.Module):
    """Sum of several losses of the same (logits, target) call."""

    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)


def build_loss(name: str, ignore_index: int) -> nn.Module:
    """Loss on logits (N, C, H, W) and targets (N, H, W); `ignore_index` pixels don't count."""
    ce = nn.CrossEntropyLoss(ignore_index=ignore_index)
    dice = DiceLoss(mode="multiclass", ignore_index=ignore_index)
    choices = {"ce": ce, "dice": dice, "ce+dice": _Sum(ce, dice)}
    if name not in choices:
        raise ConfigError(f"train.loss: unknown loss {name!r}; choose from {list(choices)}")
    return choices[name]
