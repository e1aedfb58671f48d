"""One loaded model: any RGB image in, its class-index mask at the image's own size out.

An image is letterboxed to the model's input size exactly as the preprocess stage did
(`segflow.preprocess.letterbox`: resize keeping aspect with INTER_AREA, pad bottom/right),
run through onnxruntime or PyTorch, and the mask's padding is cropped before it is resized
back to the input size with nearest-neighbour (labels are not interpolated).

Inference runs one request at a time per model: onnxruntime and PyTorch already use every
core for one image, so parallel runs would only fight over them; concurrent requests
decode and encode in parallel and queue here.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import torch

from segflow.errors import SegflowError
from segflow.preprocess import content_size

__all__ = ["ModelInfo", "Predictor", "onnx_predictor", "torch_predictor"]


@dataclass(frozen=True)
class ModelInfo:
    """What `GET /model` reports about the served model."""

    name: str
    version: str | None
    alias: str | None
    #: "onnx-int8", "onnx-fp32" or "torch".
    runtime: str
    class_names: list[str]
    #: RGB per class.
    palette: list[list[int]]
    image_size: int
    #: Size of the served weights file.
    bytes: int
    #: test_miou of the served model (None when unknown) and what else the registry knows.
    metrics: dict = field(default_factory=dict)
    source: str = ""
    loaded_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def as_dict(self) -> dict:
        return asdict(self)


class Predictor:
    """`predict(image)`: (H, W, 3) uint8 RGB -> (H, W) uint8 class indices.

    `run` maps a (1, 3, S, S) float32 RGB 0..255 batch to (1, S, S) uint8 class indices.
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], info: ModelInfo) -> None:
        self._run = run
        self.info = info
        self._lock = threading.Lock()

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.predict_timed(image)[0]

    def predict_timed(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """(mask, seconds of work): letterbox, network and resize back, not the wait for
        another request's turn at the network."""
        start = time.perf_counter()
        height, width = image.shape[:2]
        size = self.info.image_size
        inner_h, inner_w = content_size(height, width, size)
        # What segflow.preprocess.letterbox does to an image (tests hold the two equal).
        boxed = np.zeros((size, size, 3), np.uint8)
        boxed[:inner_h, :inner_w] = cv2.resize(image, (inner_w, inner_h), interpolation=cv2.INTER_AREA)
        batch = np.ascontiguousarray(boxed.transpose(2, 0, 1)[None], dtype=np.float32)
        waited = time.perf_counter()
        with self._lock:
            waited = time.perf_counter() - waited
            mask = self._run(batch)[0]
        mask = cv2.resize(np.ascontiguousarray(mask[:inner_h, :inner_w]), (width, height),
                          interpolation=cv2.INTER_NEAREST)
        return mask, time.perf_counter() - start - waited


def onnx_predictor(path: Path, info: dict, threads: int = 0) -> Predictor:
    """A predictor running the ONNX file `path` (from `segflow.export`); `info` fills ModelInfo
    beyond what the file's metadata says."""
    from segflow.export import read_metadata, session

    runner = session(path, threads)
    meta = read_metadata(runner)
    missing = [key for key in ("class_names", "image_size") if key not in meta]
    if missing:
        raise ValueError(f"{path}: no segflow metadata {missing}: export it with `segflow export`")
    metrics = {"test_miou": meta.get("test_miou"), **info.pop("metrics", {})}
    model = ModelInfo(
        name=info.pop("name", meta.get("name", Path(path).stem)), version=info.pop("version", meta.get("version")),
        alias=info.pop("alias", None), runtime=f"onnx-{meta.get('variant', 'fp32')}", class_names=meta["class_names"],
        palette=meta.get("palette") or _default_palette(len(meta["class_names"])),
        image_size=int(meta["image_size"]), bytes=Path(path).stat().st_size, metrics=metrics, **info,
    )
    return Predictor(lambda batch: runner.run(["mask"], {"image": batch})[0], model)


def torch_predictor(checkpoint: Path, info: dict) -> Predictor:
    """A predictor running a `segflow.model.save_checkpoint` file with PyTorch."""
    from segflow.model import load_checkpoint

    net, meta = load_checkpoint(checkpoint)
    names = meta["class_names"]
    palette = info.pop("palette", None) or _default_palette(len(names))
    model = ModelInfo(
        name=info.pop("name", Path(checkpoint).stem), version=info.pop("version", None), alias=info.pop("alias", None),
        runtime="torch",
        class_names=names, palette=palette, image_size=int(meta["image_size"]),
        bytes=Path(checkpoint).stat().st_size, metrics=info.pop("metrics", {}), **info,
    )

    @torch.inference_mode()
    def run(batch: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(batch)).argmax(1).to(torch.uint8).numpy()

    return Predictor(run, model)


def _default_palette(count: int) -> list[list[int]]:
    from segflow.visualize import palette

    return palette(count).tolist()
