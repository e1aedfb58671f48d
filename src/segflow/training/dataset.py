"""Training data: the preprocessed arrays as a torch Dataset, with augmentation.

Arrays are memory-mapped (see `segflow.data.preprocess`), so an epoch reads pixels that are
already decoded and resized; albumentations applies the augmentation set in params.
"""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from segflow.config import AugmentParams

__all__ = ["load_split", "build_augmentation", "SegmentationDataset"]


def load_split(preprocess_dir: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, S, S, 3) uint8, masks (N, S, S) uint8) of one split, memory-mapped."""
    images = np.load(preprocess_dir / f"{split}_images.npy", mmap_mode="r")
    masks = np.load(preprocess_dir / f"{split}_masks.npy", mmap_mode="r")
    return images, masks


def build_augmentation(params: AugmentParams, size: int, ignore_index: int, seed: int) -> A.Compose:
    """The training augmentation; padding it introduces is labelled `ignore_index`."""
    return A.Compose(
        [
            A.HorizontalFlip(p=params.hflip),
            A.RandomResizedCrop(size=(size, size), scale=(0.5, 1.0), p=params.crop),
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


class SegmentationDataset(Dataset):
    """Items: image (3, S, S) float32 RGB 0..255 and mask (S, S) int64."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, transform: A.Compose | None = None) -> None:
        self.images = images
        self.masks = masks
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Copies: the arrays are read-only memory maps, and torch wants writable memory.
        image = np.array(self.images[index])
        mask = np.array(self.masks[index])
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float()
        return image_t, torch.from_numpy(np.ascontiguousarray(mask)).long()
