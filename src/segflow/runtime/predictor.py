"""One loaded model: any RGB image in, its class-index mask at the image's own size out.

Prediction is `segflow.inference.segment.Segmenter` (the path evaluation and the
registered model use) over an onnxruntime session or a PyTorch network.

Inference runs one request at a time per model: onnxruntime and PyTorch already use every
core for one image, so parallel runs would only fight over them; concurrent requests
decode and encode in parallel and queue here. `predict_from` takes the decoding function,
not the image, so the full-size image is freed as soon as its working-resolution copy exists.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from segflow.inference.segment import Runner, Segmenter, as_rgb, confidence, onnx_runner, torch_runner

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
    #: Working resolution (longer side in pixels; None: each image's own) and input tile
    #: [height, width] (see segflow.inference.segment).
    long_side: int | None
    tile: list[int]
    #: Size of the served weights file.
    bytes: int
    #: test_miou of the served model (None when unknown) and what else the registry knows.
    metrics: dict = field(default_factory=dict)
    source: str = ""
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def as_dict(self) -> dict:
        return asdict(self)


class Predictor:
    """`predict(image)`: (H, W, 3) uint8 RGB -> (H, W) uint8 class indices.

    `run` is a `segflow.inference.segment.Runner` at the model's input size.
    """

    def __init__(self, run: Runner, info: ModelInfo) -> None:
        self.info = info
        self._lock = threading.Lock()
        self._waited = threading.local()

        def locked(batch: np.ndarray) -> np.ndarray:
            start = time.perf_counter()
            with self._lock:
                self._waited.seconds = time.perf_counter() - start
                return run(batch)

        self._segmenter = Segmenter(locked, info.long_side, tuple(info.tile))

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.predict_timed(image)[0]

    def predict_timed(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """(mask, seconds of work): scale, network and resize back, not the wait for
        another request's turn at the network."""
        return self.predict_from(lambda: image)

    def predict_from(self, load: Callable[[], Any]) -> tuple[np.ndarray, float]:
        """`predict_timed` of the image `load()` returns: an array, held only until its
        working-resolution copy exists (when that is a resized copy), or a decoded image
        handing out its rows (`segflow.serving.decode.DecodedImage`: height, width, rows(top,
        bottom), close()), shrunk a band at a time and closed once its working copy exists."""
        loaded = load()
        start = time.perf_counter()
        self._waited.seconds = 0.0
        if isinstance(loaded, np.ndarray):
            image = as_rgb(loaded)
            del loaded
            height, width = image.shape[:2]
            scaled = self._segmenter.scaled(image)
            del image
        else:
            height, width = loaded.height, loaded.width
            try:
                scaled = self._segmenter.scaled_rows(height, width, loaded.rows)
            finally:
                loaded.close()
        logits = self._segmenter.logits(scaled)
        del scaled
        mask = self._segmenter.to_mask(logits, height, width)
        return mask, time.perf_counter() - start - self._waited.seconds

    def predict_scored(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """(mask, confidence): the mask `predict` gives, and the mean max-probability of its
        working-resolution logits (`segflow.inference.segment.confidence`)."""
        image = as_rgb(image)
        height, width = image.shape[:2]
        logits = self._segmenter.logits(self._segmenter.scaled(image))
        del image
        return self._segmenter.to_mask(logits, height, width), confidence(logits)


def onnx_predictor(path: Path, info: dict, threads: int = 0) -> Predictor:
    """A predictor running the ONNX file `path` (from `segflow.export`); `info` fills ModelInfo
    beyond what the file's metadata says."""
    from segflow.runtime.onnx_file import read_metadata, session

    runner = session(path, threads)
    meta = read_metadata(runner)
    missing = [key for key in ("class_names", "long_side", "tile") if key not in meta]
    if missing:
        raise ValueError(f"{path}: no segflow metadata {missing}: export it with `segflow export`")
    metrics = {"test_miou": meta.get("test_miou"), **info.pop("metrics", {})}
    model = ModelInfo(
        name=info.pop("name", meta.get("name", Path(path).stem)),
        version=info.pop("version", meta.get("version")),
        alias=info.pop("alias", None),
        runtime=f"onnx-{meta.get('variant', 'fp32')}",
        class_names=meta["class_names"],
        palette=meta.get("palette") or _default_palette(len(meta["class_names"])),
        long_side=meta["long_side"],
        tile=[int(v) for v in meta["tile"]],
        bytes=Path(path).stat().st_size,
        metrics=metrics,
        **info,
    )
    return Predictor(onnx_runner(runner), model)


def torch_predictor(checkpoint: Path, info: dict) -> Predictor:
    """A predictor running a `segflow.inference.network.save_checkpoint` file with PyTorch."""
    from segflow.inference.network import load_checkpoint

    net, meta = load_checkpoint(checkpoint)
    names = list(meta.class_names)
    palette = info.pop("palette", None) or _default_palette(len(names))
    model = ModelInfo(
        name=info.pop("name", Path(checkpoint).stem),
        version=info.pop("version", None),
        alias=info.pop("alias", None),
        runtime="torch",
        class_names=names,
        palette=palette,
        long_side=meta.long_side,
        tile=list(meta.tile),
        bytes=Path(checkpoint).stat().st_size,
        metrics=info.pop("metrics", {}),
        **info,
    )

    return Predictor(torch_runner(net), model)


def _default_palette(count: int) -> list[list[int]]:
    from segflow.colours import palette

    return palette(count).tolist()
