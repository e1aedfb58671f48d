"""The registered model: an MLflow pyfunc that turns RGB images into class-index masks.

Self-contained: the weights are an artifact (a `segflow.inference.network.save_checkpoint`
file), the code that travels in ``code_paths`` is this module and `segflow.inference` only
(`segflow.registry.register.code_files`), the network normalises its own input, and the
class names and palette are in the model's metadata. So
``mlflow models serve -m models:/<name>@champion --env-manager local`` answers with masks.

Input (``predict``):

* a numpy array, RGB 0..255 (uint8, or any numeric type): one image (H, W, 3) or a
  batch (N, H, W, 3); a 4th (alpha) channel is dropped, (H, W) is read as gray;
* a pandas DataFrame with a column ``image`` of base64-encoded PNG/JPEG files (a
  ``data:image/...;base64,`` prefix is allowed), one image per row, sizes may differ.

Output: class indices, uint8, at the input image's own size: (H, W) for one array
image, (N, H, W) for a batch, and a list of (H, W) arrays for a DataFrame. Prediction is
`segflow.inference.segment.Segmenter`, the path evaluation and the service use too.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
from torch import nn

from segflow.inference.network import load_checkpoint
from segflow.inference.segment import Segmenter, torch_runner

__all__ = ["CHECKPOINT", "IMAGE_COLUMN", "SegmentationModel", "decode_image", "encode_png"]

#: Key of the checkpoint file among the pyfunc model's artifacts.
CHECKPOINT = "checkpoint"
#: DataFrame column holding base64-encoded image files.
IMAGE_COLUMN = "image"


def decode_image(data: str | bytes, where: str = "image") -> np.ndarray:
    """A base64 PNG/JPEG (str or bytes, optionally a data URL) -> (H, W, 3) uint8 RGB.

    Raises:
        ValueError: not base64, or not a decodable image (the message names `where`).
    """
    if isinstance(data, str):
        data = data.split(",", 1)[1] if data.startswith("data:") else data
        try:
            data = base64.b64decode(data, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"{where}: not base64 ({exc}); send base64-encoded PNG/JPEG bytes") from None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB) if data else None
    if image is None:
        raise ValueError(f"{where}: {len(data)} bytes are not a PNG/JPEG image")
    return image


def encode_png(image: np.ndarray) -> str:
    """(H, W, 3) uint8 RGB -> base64 PNG, as the DataFrame input expects."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"cannot encode an image of shape {image.shape} as PNG")
    return base64.b64encode(data.tobytes()).decode("ascii")


class SegmentationModel(mlflow.pyfunc.PythonModel):
    """Images in, class-index masks out (see the module docstring for the formats).

    Logged without its network: `load_context` rebuilds it from the checkpoint artifact,
    so the weights are stored once. `attach` sets a network directly (for scoring a model
    in memory before it is logged).
    """

    # Inputs are checked here, not by MLflow: it would derive a schema from predict's type
    # hints, and a schema cannot say "an array or a DataFrame". This MLflow attribute turns
    # that off (and its warning that predict has no type hints).
    _skip_type_hint_validation = True

    def __init__(self) -> None:
        self.net: nn.Module | None = None
        self.segmenter: Segmenter | None = None
        #: Size of the weights file, reported by `segflow promote` (0 when unknown).
        self.checkpoint_bytes = 0

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        path = Path(context.artifacts[CHECKPOINT])
        net, meta = load_checkpoint(path)
        self.attach(net, meta.long_side, meta.tile, path.stat().st_size, meta.flip)

    def attach(
        self,
        net: nn.Module,
        long_side: int | None,
        tile: tuple[int, int] | list[int],
        checkpoint_bytes: int = 0,
        flip: bool = False,
    ) -> SegmentationModel:
        """Use `net`: (N, 3, h, w) float RGB 0..255 -> (N, C, h, w) logits, each image resized
        to the working `long_side` (None: its own), in input tiles `tile` (height, width)."""
        self.net = net.eval()
        self.segmenter = Segmenter(torch_runner(self.net), long_side, tuple(tile), flip=flip)
        self.checkpoint_bytes = checkpoint_bytes
        return self

    @property
    def parameters(self) -> int:
        """Number of weights in the network."""
        return sum(p.numel() for p in self.net.parameters()) if self.net is not None else 0

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201 (see above)
        """Masks for `model_input`: see the module docstring."""
        if isinstance(model_input, pd.DataFrame):
            if IMAGE_COLUMN not in model_input.columns:
                raise ValueError(
                    f"DataFrame input needs a column {IMAGE_COLUMN!r} of base64 PNG/JPEG images; "
                    f"got columns {list(model_input.columns)}"
                )
            images = [decode_image(value, f"row {i}") for i, value in enumerate(model_input[IMAGE_COLUMN])]
            return self.predict_masks(images)
        array = np.asarray(model_input)
        if array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4)):
            return self.predict_masks([array])[0]
        if array.ndim == 4 and array.shape[-1] in (3, 4):
            return np.stack(self.predict_masks(list(array)))
        raise ValueError(
            f"array input of shape {array.shape}: give one RGB image (H, W, 3) or a batch "
            f"(N, H, W, 3), or a DataFrame with a column {IMAGE_COLUMN!r} of base64 PNG/JPEG"
        )

    def predict_masks(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One (H, W) uint8 mask per image (H, W, 3), each at its image's size."""
        if self.segmenter is None:
            raise RuntimeError("no network: load the model with mlflow.pyfunc.load_model")
        return self.segmenter.predict(images)
