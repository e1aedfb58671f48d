"""Static int8 quantization of the exported model, calibrated on tiles of training images.

Weights (per channel) and activations are quantized to 8 bits in QDQ form; onnxruntime runs
it with integer kernels, which is what makes it smaller *and* faster on a CPU (dynamic
quantization keeps float activations and runs convolutions slower than fp32).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from segflow.inference.segment import nchw
from segflow.prepared import entries, read_plan, read_scaled

__all__ = ["quantize_int8", "calibration_images"]


class _Calibration(CalibrationDataReader):
    """Feeds calibration images (N, S, S, 3) uint8 one at a time to the quantizer."""

    def __init__(self, images: np.ndarray) -> None:
        self.batches = iter([{"image": nchw(images[i : i + 1])} for i in range(len(images))])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


class _PerTensorNote(logging.Filter):
    """Drops onnxruntime's note that a 1-D weight (the few BatchNorms the optimiser cannot
    fold into a convolution, after TF-style SAME padding) gets one scale instead of one per
    channel: expected, harmless (the int8 loss is measured), and not the user's to fix."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


def quantize_int8(fp32_path: Path, path: Path, calibration: np.ndarray) -> Path:
    """Quantize `fp32_path` to int8 at `path`; `calibration` (N, S, S, 3) uint8 RGB images."""
    note, root = _PerTensorNote(), logging.getLogger()  # onnxruntime logs the note on the root logger
    with tempfile.TemporaryDirectory(prefix="segflow-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Folds constants and infers shapes, as onnxruntime recommends before quantizing.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        root.addFilter(note)
        try:
            quantize_static(
                str(prepared),
                str(path),
                _Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
            )
        finally:
            root.removeFilter(note)
    return Path(path)


def calibration_images(preprocess_dir: Path, count: int, seed: int) -> np.ndarray:
    """`count` tiles of training images at the working scale (seeded choice of images, each
    padded or cut to the inference tile), (count, th, tw, 3) uint8: the int8 calibration."""
    folder = Path(preprocess_dir)
    tile_h, tile_w = read_plan(folder).tile
    train = entries(folder, "train")
    picked = np.sort(np.random.default_rng(seed).choice(len(train), min(count, len(train)), replace=False))
    tiles = np.zeros((len(picked), tile_h, tile_w, 3), np.uint8)
    for row, index in enumerate(picked):
        image = read_scaled(folder, train[index])[0][:tile_h, :tile_w]
        tiles[row, : image.shape[0], : image.shape[1]] = image
    return tiles
