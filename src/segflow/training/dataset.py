"""Training data: random crops of the images stored at the working scale, augmented.

Images are memory-mapped one at a time (see `segflow.prepared`), so RAM stays bounded
whatever the dataset size. An epoch is a fixed number of items (``train.steps_per_epoch``
x ``batch_size``), each a crop of a training image drawn with replacement, so an epoch is
the same work on 7 images or 7,000; a share of the crops (``train.class_crops``) is
centred on a pixel of a class drawn with weight inverse to its training pixel share, so
rare classes appear in batches. Every random choice, the image's and the augmentation's
included, comes from (seed, epoch, item) alone, so a resumed epoch replays exactly and an
item is the same whichever process or worker loads it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from segflow.config import AugmentParams
from segflow.errors import SegflowError
from segflow.prepared import Entry, entries, read_scaled

__all__ = ["build_augmentation", "crop_origin", "CropDataset", "class_pixel_counts"]


def build_augmentation(params: AugmentParams, crop: tuple[int, int], ignore_index: int, seed: int) -> A.Compose:
    """The training augmentation of a crop; padding it introduces is labelled `ignore_index`."""
    return A.Compose(
        [
            A.HorizontalFlip(p=params.hflip),
            A.RandomResizedCrop(size=crop, scale=(0.5, 1.0), p=params.crop),
            A.Affine(
                translate_percent=(-params.shift, params.shift),
                scale=(1.0 - params.scale, 1.0 + params.scale),
                rotate=(-params.rotate, params.rotate),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=ignore_index,
                p=params.affine,
            ),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=25, val_shift_limit=25, p=params.color),
        ],
        seed=seed,
    )


def class_pixel_counts(folder: Path, split: str, num_classes: int, items: Sequence[Entry] | None = None) -> np.ndarray:
    """Pixels of each class over a split's masks at the working scale (ignore left out);
    `items`: these train or val entries instead (a cross-validation fold's)."""
    counts = np.zeros(num_classes, np.int64)
    for entry in entries(folder, split) if items is None else items:
        counts += np.bincount(np.asarray(read_scaled(folder, entry)[1]).ravel(), minlength=256)[:num_classes]
    return counts


def crop_origin(
    mask: np.ndarray, crop: tuple[int, int], rng: np.random.Generator, class_weights: np.ndarray | None
) -> tuple[int, int]:
    """Top-left (y, x) of a crop of `mask` (h, w): uniform, or centred on a pixel of a class
    drawn by `class_weights` among those present (None: uniform)."""
    height, width = mask.shape
    max_y, max_x = max(0, height - crop[0]), max(0, width - crop[1])
    if class_weights is not None:
        present = [c for c in np.unique(mask) if c < len(class_weights)]
        if present:
            weights = class_weights[present] / class_weights[present].sum()
            target = rng.choice(present, p=weights)
            ys, xs = np.nonzero(mask == target)
            pick = rng.integers(len(ys))
            y, x = int(ys[pick]) - crop[0] // 2, int(xs[pick]) - crop[1] // 2
            return int(np.clip(y, 0, max_y)), int(np.clip(x, 0, max_x))
    return int(rng.integers(max_y + 1)), int(rng.integers(max_x + 1))


class CropDataset(Dataset):
    """Items: image (3, ch, cw) float32 RGB 0..255 and mask (ch, cw) int64, random crops of
    images drawn with replacement; `length` items per epoch, whatever the image count.

    Images smaller than the crop are padded (image 0, mask `ignore_index`). `items`: these
    train or val entries instead of the split's (a cross-validation fold's).
    """

    def __init__(
        self,
        folder: Path,
        split: str,
        crop: tuple[int, int],
        length: int,
        ignore_index: int,
        seed: int,
        transform: A.Compose | None = None,
        class_crops: float = 0.0,
        class_weights: np.ndarray | None = None,
        items: Sequence[Entry] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.entries = entries(folder, split) if items is None else list(items)
        if not self.entries:
            raise SegflowError(
                f"no {split} images in {folder}: add photos, or lower preprocess.val_fraction / test_fraction"
            )
        self.crop, self.length = (int(crop[0]), int(crop[1])), length
        self.ignore_index, self.seed, self.epoch = ignore_index, seed, 0
        self.transform, self.class_crops, self.class_weights = transform, class_crops, class_weights

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def _padded(self, entry: Entry) -> tuple[np.ndarray, np.ndarray]:
        image, mask = read_scaled(self.folder, entry)
        height, width = max(mask.shape[0], self.crop[0]), max(mask.shape[1], self.crop[1])
        if (height, width) == mask.shape:
            return image, mask
        padded_image = np.zeros((height, width, 3), np.uint8)
        padded_mask = np.full((height, width), self.ignore_index, np.uint8)
        padded_image[: image.shape[0], : image.shape[1]] = image
        padded_mask[: mask.shape[0], : mask.shape[1]] = mask
        return padded_image, padded_mask

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        augment_seed = int(rng.integers(2**31))
        image, mask = self._padded(self.entries[int(rng.integers(len(self.entries)))])  # with replacement
        aware = self.class_weights is not None and rng.random() < self.class_crops
        y, x = crop_origin(mask, self.crop, rng, self.class_weights if aware else None)
        # Copies: the arrays are read-only memory maps, and torch wants writable memory.
        image = np.array(image[y : y + self.crop[0], x : x + self.crop[1]])
        mask = np.array(mask[y : y + self.crop[0], x : x + self.crop[1]])
        if self.transform is not None:
            # One generator shared by every transform: Compose.set_random_seed would seed each
            # transform alike, so the flip, the affine and the colour draws would coincide.
            self.transform.set_random_state(np.random.default_rng(augment_seed), random.Random(augment_seed))
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        return image_t, torch.from_numpy(np.ascontiguousarray(mask)).long()
