"""Images of any size in, class masks of the same size out: the one prediction path.

An image is resized to the model's working resolution (its longer side becomes `long_side`
pixels, planned by the preprocess stage from the data; `working_factor`), cut into
overlapping tiles of the network's input size (`tile`) when it is larger than one tile
(else padded to a multiple of 32 and run whole), the tiles run in batches and their logits
are blended with weights that fall linearly towards each tile's edge, so no seam shows
where tiles meet. The blended logits are resized back to the image's own size (bilinear,
one class at a time, keeping the running argmax; when that would take more than
`UPSAMPLE_BYTES`, the argmax is taken at the working resolution and the mask resized with
nearest-neighbour).

Memory, for an image of N pixels resized by s (= long_side / its longer side) with C
classes: the logits accumulator (4·C·s²·N bytes; the blending weights are separable, two
1-D sums), a padded copy of the scaled image only when it is smaller than a tile, the
uint8 mask (N) and, when resizing logits back, at most `UPSAMPLE_BYTES`. No int64 argmax
or float64 copy of a full-size image.

A *runner* is the network behind a function: (n, 3, h, w) float32 RGB 0..255 -> (n, C, h, w)
logits, h and w multiples of 32. `torch_runner` and `onnx_runner` make one from a PyTorch
network or an onnxruntime session of the exported model (dynamic spatial axes; tiles all
have one shape, which the runtime reuses).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "BATCH_SIZE",
    "OVERLAP",
    "UPSAMPLE_BYTES",
    "Runner",
    "ceil32",
    "as_rgb",
    "scaled_size",
    "working_factor",
    "rescale",
    "nchw",
    "batched",
    "tile_origins",
    "blend_weights",
    "Segmenter",
    "confidence",
    "torch_runner",
    "onnx_runner",
]

#: Tiles per forward pass: bounds memory whatever the image size.
BATCH_SIZE = 8
#: Share of a tile that overlaps its neighbour (each side's blending ramp).
OVERLAP = 0.25
#: Largest working memory of the bilinear resize of logits to full resolution (bytes): it
#: takes `_UPSAMPLE_BYTES_PER_PIXEL` per output pixel; beyond it the mask is resized
#: instead (nearest-neighbour), so memory stays bounded for huge photos.
UPSAMPLE_BYTES = 256 * 2**20
#: Per output pixel while resizing class by class: the running max and the class being
#: resized (float32 each), the comparison and the mask (uint8 each).
_UPSAMPLE_BYTES_PER_PIXEL = 10
#: Pixels per band when taking the argmax of full-size logits (bounds its int64 temporary).
_ARGMAX_BAND = 1 << 20
#: Largest band of full-size rows `Segmenter.scaled_rows` asks for (pixels).
_SHRINK_BAND = 8_000_000

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


def working_factor(height: int, width: int, long_side: int | None) -> float:
    """The resize factor that brings an image's longer side to `long_side` (the model's
    working resolution; None: the image's own). Photos of one dataset come at different
    resolutions of similar scenes, so objects keep their size relative to the image."""
    return 1.0 if long_side is None else long_side / max(height, width)


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


def _ramp(length: int, overlap: float = OVERLAP) -> np.ndarray:
    """(length,) float32: 1 inside, falling linearly over `overlap` of it towards each end."""
    span = max(1.0, overlap * length)
    position = np.arange(length, dtype=np.float32) + 0.5
    return np.clip(np.minimum(position, length - position) / span, 1e-3, 1.0)


def blend_weights(height: int, width: int, overlap: float = OVERLAP) -> np.ndarray:
    """(height, width) float32 weights: 1 inside, falling linearly over `overlap` of the
    tile towards each edge (never to 0, so an image border covered once keeps its logits)."""
    return np.outer(_ramp(height, overlap), _ramp(width, overlap)).astype(np.float32)


def _coverage(length: int, tile: int, origins: list[int], ramp: np.ndarray) -> np.ndarray:
    """(length,) float32: the sum of `ramp` over the tiles starting at `origins`."""
    total = np.zeros(length, np.float32)
    for origin in origins:
        total[origin : origin + tile] += ramp
    return total


def _argmax(logits: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (h, w) uint8 argmax over classes, in bands of rows (no full-size int64)."""
    height, width = logits.shape[1:]
    mask = np.empty((height, width), np.uint8)
    rows = max(1, _ARGMAX_BAND // max(width, 1))
    for top in range(0, height, rows):
        mask[top : top + rows] = logits[:, top : top + rows].argmax(0)
    return mask


def confidence(logits: np.ndarray) -> float:
    """Mean over pixels of the largest softmax probability of (C, h, w) `logits`: 1 when
    every pixel is certain, 1/C when the model cannot tell the classes apart. Computed in
    bands of rows, so its temporaries stay small whatever the image size."""
    height, width = logits.shape[1:]
    total = 0.0
    rows = max(1, _ARGMAX_BAND // max(width, 1))
    for top in range(0, height, rows):
        band = logits[:, top : top + rows].astype(np.float32)
        band = np.exp(band - band.max(0, keepdims=True))  # the largest term is exp(0) = 1
        total += float((1.0 / band.sum(0)).sum(dtype=np.float64))
    return total / max(height * width, 1)


def ceil32(value: float) -> int:
    """The smallest multiple of 32 at least `value` (and at least 32): a U-Net of depth 5
    halves its input five times, so a padded image, a crop and a tile are such multiples.
    The same rounding as the plan's crops and tiles (`segflow.data.plan`)."""
    return max(32, math.ceil(value / 32) * 32)


class Segmenter:
    """A runner at the working resolution `long_side` (each image resized so its longer side
    is that many pixels; None: its own size) with input tiles `tile` (height, width), applied
    to images of any size. `flip` adds horizontal-flip test-time augmentation (2x the work)."""

    def __init__(
        self,
        run: Runner,
        long_side: int | None,
        tile: tuple[int, int],
        batch_size: int = BATCH_SIZE,
        flip: bool = False,
    ) -> None:
        self.run = run
        self.long_side = None if long_side is None else int(long_side)
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
            padded_h, padded_w = ceil32(height), ceil32(width)
            tile_h, tile_w = padded_h, padded_w
        else:
            padded_h, padded_w = max(height, tile_h), max(width, tile_w)
            tile_h, tile_w = min(tile_h, padded_h), min(tile_w, padded_w)
        padded = scaled
        if (padded_h, padded_w) != (height, width):  # smaller than a tile: pad (a small copy)
            padded = np.zeros((padded_h, padded_w, 3), np.uint8)
            padded[:height, :width] = scaled
        ys, xs = tile_origins(padded_h, tile_h), tile_origins(padded_w, tile_w)
        origins = [(y, x) for y in ys for x in xs]
        ramp_y, ramp_x = (_ramp(tile_h), _ramp(tile_w)) if len(origins) > 1 else (np.ones(tile_h), np.ones(tile_w))
        weights = np.outer(ramp_y, ramp_x).astype(np.float32)
        total = None
        for start in range(0, len(origins), self.batch_size):
            chunk = origins[start : start + self.batch_size]
            batch = np.stack([padded[y : y + tile_h, x : x + tile_w] for y, x in chunk])
            output = self._run(batch)
            if total is None:
                total = np.zeros((output.shape[1], padded_h, padded_w), np.float32)
            for (y, x), tile_logits in zip(chunk, output):
                total[:, y : y + tile_h, x : x + tile_w] += tile_logits * weights
        # The weights are an outer product on a grid of origins, so their sum is one too:
        # two 1-D arrays instead of a full-size one.
        total /= _coverage(padded_h, tile_h, ys, ramp_y.astype(np.float32))[:, None]
        total /= _coverage(padded_w, tile_w, xs, ramp_x.astype(np.float32))
        return total[:, :height, :width]

    def predict_one(self, image: np.ndarray) -> np.ndarray:
        """(H, W) uint8 class indices of one image (any of `as_rgb`'s layouts), at its size."""
        image = as_rgb(image)
        return self.to_mask(self.logits(self.scaled(image)), *image.shape[:2])

    def scaled(self, image: np.ndarray) -> np.ndarray:
        """`image` (H, W, 3) at the working resolution."""
        return rescale(image, working_factor(*image.shape[:2], self.long_side))

    def scaled_rows(self, height: int, width: int, rows: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """`scaled` of the (height, width, 3) image whose rows top..bottom `rows(top, bottom)`
        returns, built a band of rows at a time when that gives the same bytes, so the
        full-size image never exists at once (the service's decoder hands its rows this way).

        The same bytes: when shrinking, `height` rows become h working rows, and with
        g = gcd(height, h) every height/g input rows cover exactly h/g working rows. OpenCV's
        area resize of a band of such blocks is then the whole image's resize of those rows,
        bit for bit (its ratio and weights are the same). When height/g rows are more than
        `_SHRINK_BAND` pixels (sizes with no common factor), or the image is not shrunk,
        all rows are asked for at once.
        """
        scale = working_factor(height, width, self.long_side)
        out_h, out_w = scaled_size(height, width, scale)
        block, block_out = height // math.gcd(height, out_h), out_h // math.gcd(height, out_h)
        if scale >= 1.0 or block * width > _SHRINK_BAND:
            return rescale(rows(0, height), scale)
        step = block * max(1, _SHRINK_BAND // (block * width))
        result = np.empty((out_h, out_w, 3), np.uint8)
        for top in range(0, height, step):
            band = rows(top, min(top + step, height))
            first, count = top // block * block_out, len(band) // block * block_out
            result[first : first + count] = cv2.resize(band, (out_w, count), interpolation=cv2.INTER_AREA)
        return result

    def to_mask(self, logits: np.ndarray, height: int, width: int) -> np.ndarray:
        """(height, width) uint8 class indices from (C, h, w) working-scale logits."""
        if logits.shape[1:] == (height, width):
            return _argmax(logits)
        if height * width * _UPSAMPLE_BYTES_PER_PIXEL <= UPSAMPLE_BYTES:
            # Bilinear logits, then argmax: smooth boundaries instead of working-scale blocks.
            # One class at a time against the running max: never C full-size arrays.
            def up(index: int) -> np.ndarray:
                return cv2.resize(logits[index], (width, height), interpolation=cv2.INTER_LINEAR)

            best, mask = up(0), np.zeros((height, width), np.uint8)
            for index in range(1, len(logits)):
                current = up(index)
                mask[current > best] = index  # strictly greater: ties keep the first class, as argmax
                np.maximum(best, current, out=best)
            return mask
        return cv2.resize(_argmax(logits), (width, height), interpolation=cv2.INTER_NEAREST)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One (H, W) uint8 mask per image, each at its image's own size."""
        return [self.predict_one(image) for image in images]


def torch_runner(net: nn.Module) -> Runner:
    """A runner for a PyTorch network (eval mode, on the device its weights are on). torch is
    imported here: the rest of this module serves ONNX runtimes and the preprocess stage, whose
    processes then start without it (1.4 s of CPU each)."""
    import torch

    net.eval()
    device = next(net.parameters(), torch.empty(0)).device

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return run


def onnx_runner(session: object, output: str = "logits") -> Runner:
    """A runner for an onnxruntime session of an exported model (input ``image``)."""
    return lambda batch: session.run([output], {"image": batch})[0]
