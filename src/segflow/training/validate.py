"""Validation during training: whole validation images through the inference path.

Each validation image (stored at the working scale) runs through
`segflow.inference.segment.Segmenter.logits`, tiles and blending included, as it will when
served; loss and scores are taken at the working scale against its mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from segflow.inference.network import SegmentationNet
from segflow.inference.segment import Segmenter, torch_runner
from segflow.metrics import SegmentationMeter
from segflow.prepared import entries, read_scaled

__all__ = ["validate"]


@torch.no_grad()
def validate(
    model: SegmentationNet,
    folder: Path,
    tile: tuple[int, int],
    loss_fn: torch.nn.Module,
    num_classes: int,
    ignore_index: int,
    split: str = "val",
) -> tuple[float, SegmentationMeter]:
    """Mean loss per image and the accumulated metrics of `model` over `split`."""
    model.eval()
    device = next(model.parameters()).device
    segmenter = Segmenter(torch_runner(model), None, tile)  # images are already at the working resolution
    meter = SegmentationMeter(num_classes, ignore_index)
    total, items = 0.0, entries(folder, split)
    for entry in items:
        image, mask = read_scaled(folder, entry)
        logits = torch.from_numpy(segmenter.logits(np.asarray(image)))[None].to(device)
        target = torch.from_numpy(np.array(mask)).long()[None].to(device)
        total += loss_fn(logits, target).item()
        meter.update(logits.argmax(1), target)
    return total / max(len(items), 1), meter
