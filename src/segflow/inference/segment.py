"""Images of any size in, class masks of the same size out: the one prediction path.

An image is letterboxed to the network's square input (resize keeping aspect with
INTER_AREA, pad bottom/right with zeros), the network runs on batches of such squares,
the padding is cropped from each mask and the mask is resized back to the image's size
with nearest-neighbour (labels are not interpolated). The preprocess stage letterboxes
training images with the same `letterbox`, so the network sees at serving time exactly
what it saw in training.

A *runner* is the network behind a function: (n, 3, S, S) float32 RGB 0..255 ->
(n, C, S, S) logits, or (n, S, S) class indices for a graph that does its own argmax
(the exported ONNX model's ``mask`` output, 1 byte per pixel). `torch_runner` and
`onnx_runner` make one from a PyTorch network or an onnxruntime session.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

__all__ = [
    "BATCH_SIZE",
    "Runner",
    "content_size",
    "letterbox",
    "unletterbox",
    "as_rgb",
    "nchw",
    "batched",
    "Segmenter",
    "torch_runner",
    "onnx_runner",
]

#: Images per forward pass: bounds memory when a request holds many large photos.
BATCH_SIZE = 8

Runner = Callable[[np.ndarray], np.ndarray]


def content_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) of an image of `height` x `width` once letterboxed into `size`."""
    scale = size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def letterbox(array: np.ndarray, size: int, fill: int = 0, nearest: bool = False) -> np.ndarray:
    """Resize keeping aspect so the longer side is `size`, then pad bottom/right with `fill`.

    Padding at the bottom/right (not centred) keeps the image at the origin, so a
    prediction maps back to the original by cropping, then resizing (`unletterbox`).

    Args:
        array: (H, W, 3) image or (H, W) mask, uint8.
        nearest: nearest-neighbour (for masks: labels stay labels); else INTER_AREA,
            which avoids aliasing when shrinking photos.
    Returns:
        (size, size, 3) or (size, size), uint8.
    """
    new_h, new_w = content_size(*array.shape[:2], size)
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    out = np.full((size, size, *array.shape[2:]), fill, dtype=np.uint8)
    out[:new_h, :new_w] = cv2.resize(array, (new_w, new_h), interpolation=interpolation)
    return out


def unletterbox(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """(S, S) mask of a letterboxed `height` x `width` image -> (height, width) uint8."""
    inner_h, inner_w = content_size(height, width, mask.shape[0])
    inner = np.ascontiguousarray(mask[:inner_h, :inner_w], dtype=np.uint8)
    return cv2.resize(inner, (width, height), interpolation=cv2.INTER_NEAREST)


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


def nchw(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 0..255, the network's input."""
    return np.ascontiguousarray(np.asarray(images).transpose(0, 3, 1, 2), dtype=np.float32)


def batched(run: Runner, images: np.ndarray, batch_size: int = BATCH_SIZE) -> Iterator[np.ndarray]:
    """`run` over (N, S, S, 3) uint8 `images` in batches: yields each batch's output."""
    for start in range(0, len(images), batch_size):
        yield run(nchw(images[start : start + batch_size]))


class Segmenter:
    """A runner at input size `image_size`, applied to images of any size."""

    def __init__(self, run: Runner, image_size: int, batch_size: int = BATCH_SIZE) -> None:
        self.run = run
        self.image_size = image_size
        self.batch_size = batch_size

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One (H, W) uint8 mask per image (any of `as_rgb`'s layouts), at its own size."""
        masks: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [as_rgb(image) for image in images[start : start + self.batch_size]]
            boxed = np.stack([letterbox(image, self.image_size) for image in chunk])
            (output,) = batched(self.run, boxed, len(boxed))
            predicted = output if output.ndim == 3 else output.argmax(1)
            masks.extend(unletterbox(mask, *image.shape[:2]) for image, mask in zip(chunk, predicted))
        return masks


def torch_runner(net: nn.Module) -> Runner:
    """A runner for a PyTorch network (eval mode, on the device its weights are on)."""
    net.eval()
    device = next(net.parameters(), torch.empty(0)).device

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(batch).to(device)).float().cpu().numpy()

    return run


def onnx_runner(session: object, output: str = "mask") -> Runner:
    """A runner for an onnxruntime session of an exported model (input ``image``);
    `output` ``mask`` fetches class indices, ``logits`` the scores."""
    return lambda batch: session.run([output], {"image": batch})[0]
