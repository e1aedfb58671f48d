"""Images of any size in, class masks of the same size out: the one prediction path.

An image is resized by the model's working scale (`scale`, planned by the preprocess stage
from the data), cut into overlapping tiles of the network's input size (`tile`) when it is
larger than one tile (else padded to a multiple of 32 and run whole), the tiles run in
batches and their logits are blended with weights that fall linearly towards each tile's
edge, so no seam shows where tiles meet. The blended logits are resized back to the
image's own size (bilinear, then argmax; when that would take more than `UPSAMPLE_BYTES`,
the argmax is taken at the working scale and the mask resized with nearest-neighbour).

A *runner* is the network behind a function: (n, 3, h, w) float32 RGB 0..255 -> (n, C, h, w)
logits, h and w multiples of 32. `torch_runner` and `onnx_runner` make one from a PyTorch
network or an onnxruntime session of the exported model (dynamic spatial axes; tiles all
have one shape, which the runtime reuses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

__all__ = [
    "BATCH_SIZE",
    "OVERLAP",
    "UPSAMPLE_BYTES",
    "Runner",
    "as_rgb",
    "scaled_size",
    "rescale",
    "nchw",
    "batched",
    "tile_origins",
    "blend_weights",
    "Segmenter",
    "torch_runner",
    "onnx_runner",
]

#: Tiles per forward pass: bounds memory whatever the image size.
BATCH_SIZE = 8
#: Share of a tile that overlaps its neighbour (each side's blending ramp).
OVERLAP = 0.25
#: Largest float32 logits array resized to full resolution at once (bytes); beyond it the
#: mask is resized instead (nearest-neighbour), so memory stays bounded for huge photos.
UPSAMPLE_BYTES = 256 * 2**20

Runner = Callable[[np.ndarray], np.ndarray]


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any numeric (H, W), (H, W, 1), (H, W, 3) or (H, W, 4) array -> (H, W, 3) uint8 RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image.astype(np.float64)), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) of an image once resized by `scale` (at least 1 pixel each)."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def rescale(array: np.ndarray, scale: float, nearest: bool = False) -> np.ndarray:
    """`array` (H, W[, C]) resized by `scale`: INTER_AREA to shrink photos (no aliasing),
    linear to enlarge, nearest-neighbour for masks (`nearest`: labels stay labels)."""
    if scale == 1.0:
        return array
    height, width = scaled_size(*array.shape[:2], scale)
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(array, (width, height), interpolation=interpolation)


def nchw(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 0..255, the network's input."""
    return np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2), dtype=np.float32)


def batched(run: Runner, images: np.ndarray, batch_size: int = BATCH_SIZE) -> Iterator[np.ndarray]:
    """`run` over (N, h, w, 3) uint8 `images` in batches: yields each batch's logits."""
    for start in range(0, len(images), batch_size):
        yield run(nchw(images[start : start + batch_size]))


def tile_origins(length: int, tile: int, overlap: float = OVERLAP) -> list[int]:
    """Start offsets of tiles of `tile` pixels covering `length` (>= tile), the last flush
    with the end, neighbours overlapping by at least `overlap` of a tile."""
    if length <= tile:
        return [0]
    stride = max(1, int(tile * (1 - overlap)))
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def blend_weights(height: int, width: int, overlap: float = OVERLAP) -> np.ndarray:
    """(height, width) float32 weights: 1 inside, falling linearly over `overlap` of the
    tile towards each edge (never to 0, so an image border covered once keeps its logits)."""

    def ramp(length: int) -> np.ndarray:
        span = max(1.0, overlap * length)
        position = np.arange(length, dtype=np.float32) + 0.5
        return np.clip(np.minimum(position, length - position) / span, 1e-3, 1.0)

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


def _ceil32(value: int) -> int:
    return -(-value // 32) * 32


class Segmenter:
    """A runner at working scale `scale` with input tiles `tile` (height, width), applied to
    images of any size. `flip` adds horizontal-flip test-time augmentation (2x the work)."""

    def __init__(
        self,
        run: Runner,
        scale: float,
        tile: tuple[int, int],
        batch_size: int = BATCH_SIZE,
        flip: bool = False,
    ) -> None:
        self.run = run
        self.scale = float(scale)
        self.tile = (int(tile[0]), int(tile[1]))
        self.batch_size = batch_size
        self.flip = flip

    def _run(self, batch: np.ndarray) -> np.ndarray:
        logits = self.run(nchw(batch))
        if self.flip:
            logits = (logits + self.run(nchw(batch[:, :, ::-1]))[:, :, :, ::-1]) / 2
        return logits

    def logits(self, scaled: np.ndarray) -> np.ndarray:
        """(C, h, w) float32 logits of an image already at the working scale, (h, w, 3) uint8."""
        height, width = scaled.shape[:2]
        tile_h, tile_w = self.tile
        if height <= tile_h and width <= tile_w:  # one input of (nearly) its own size
            padded_h, padded_w = _ceil32(height), _ceil32(width)
            tile_h, tile_w = padded_h, padded_w
        else:
            padded_h, padded_w = max(height, tile_h), max(width, tile_w)
            tile_h, tile_w = min(tile_h, padded_h), min(tile_w, padded_w)
        padded = np.zeros((padded_h, padded_w, 3), np.uint8)
        padded[:height, :width] = scaled
        origins = [(y, x) for y in tile_origins(padded_h, tile_h) for x in tile_origins(padded_w, tile_w)]
        weights = blend_weights(tile_h, tile_w) if len(origins) > 1 else np.ones((tile_h, tile_w), np.float32)
        total, weight_sum = None, np.zeros((padded_h, padded_w), np.float32)
        for start in range(0, len(origins), self.batch_size):
            chunk = origins[start : start + self.batch_size]
            batch = np.stack([padded[y : y + tile_h, x : x + tile_w] for y, x in chunk])
            output = self._run(batch)
            if total is None:
                total = np.zeros((output.shape[1], padded_h, padded_w), np.float32)
            for (y, x), tile_logits in zip(chunk, output):
                total[:, y : y + tile_h, x : x + tile_w] += tile_logits * weights
                weight_sum[y : y + tile_h, x : x + tile_w] += weights
        total /= weight_sum
        return total[:, :height, :width]

    def predict_one(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class indices of one image (any of `as_rgb`'s layouts), at its size."""
        image = as_rgb(image)
        return self.to_mask(self.logits(rescale(image, self.scale)), *image.shape[:2])

    def to_mask(self, logits: np.ndarray, height: int, width: int) -> np.ndarray:
        """(height, width) uint8 class indices from (C, h, w) working-scale logits."""
        if logits.shape[1:] == (height, width):
            return logits.argmax(0).astype(np.uint8)
        if logits.shape[0] * height * width * 4 <= UPSAMPLE_BYTES:
            # Bilinear logits, then argmax: smooth boundaries instead of working-scale blocks.
            full = cv2.resize(logits.transpose(1, 2, 0), (width, height), interpolation=cv2.INTER_LINEAR)
            full = full.reshape(height, width, -1)
            return full.argmax(2).astype(np.uint8)
        small = logits.argmax(0).astype(np.uint8)
        return cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One (H, W) uint8 mask per image, each at its image's own size."""
        return [self.predict_one(image) for image in images]


def torch_runner(net: nn.Module) -> Runner:
    """A runner for a PyTorch network (eval mode, on the device its weights are on)."""
    net.eval()
    device = next(net.parameters(), torch.empty(0)).device

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return run


def onnx_runner(session: object, output: str = "logits") -> Runner:
    """A runner for an onnxruntime session of an exported model (input ``image``)."""
    return lambda batch: session.run([output], {"image": batch})[0]
