"""Validation during training: whole validation images through the inference path.

Each validation image (stored at the working scale) runs through
`segflow.inference.segment.Segmenter.logits`, tiles and blending included, as it will when
served; loss and scores are taken at the working scale against its mask. Under DDP each
process takes every size-th image and the sums (loss, confusion matrix) are added up over
the processes, so every process reads the same scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from segflow.inference.network import SegmentationNet
from segflow.inference.segment import Segmenter, torch_runner
from segflow.metrics import SegmentationMeter
from segflow.prepared import Entry, entries, read_scaled
from segflow.training.distributed import ONE_PROCESS, World, all_sum

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
    world: World = ONE_PROCESS,
    items: Sequence[Entry] | None = None,
) -> tuple[float, SegmentationMeter]:
    """Mean loss per image and the accumulated metrics of `model` over `split` (or these
    train or val `items`: a cross-validation fold), summed over all training processes of
    `world`."""
    model.eval()
    device = next(model.parameters()).device
    segmenter = Segmenter(torch_runner(model), None, tile)  # images are already at the working resolution
    meter = SegmentationMeter(num_classes, ignore_index)
    total, items = 0.0, entries(folder, split) if items is None else list(items)
    for entry in items[world.rank :: world.size]:
        image, mask = read_scaled(folder, entry)
        logits = torch.from_numpy(segmenter.logits(np.asarray(image)))[None].to(device)
        target = torch.from_numpy(np.array(mask)).long()[None].to(device)
        total += loss_fn(logits, target).item()
        meter.update(logits.argmax(1), target)
    sums = all_sum([total, *meter.confusion.ravel()], world, device)
    meter.confusion = sums[1:].round().astype(np.int64).reshape(meter.confusion.shape)
    return float(sums[0]) / max(len(items), 1), meter
