"""The registered model: an MLflow pyfunc that turns RGB images into class-index masks.

Self-contained: the weights are an artifact (a `segflow.model.save_checkpoint` file),
segflow's code travels in ``code_paths``, the network normalises its own input, and the
class names and palette are in the model's metadata. So
``mlflow models serve -m models:/<name>@champion --env-manager local`` answers with masks.

Input (``predict``):

* a numpy array, RGB 0..255 (uint8, or any numeric type): one image (H, W, 3) or a
  batch (N, H, W, 3); a 4th (alpha) channel is dropped, (H, W) is read as gray;
* a pandas DataFrame with a column ``image`` of base64-encoded PNG/JPEG files (a
  ``data:image/...;base64,`` prefix is allowed), one image per row, sizes may differ.

Output: class indices, uint8, at the input image's own size: (H, W) for one array
image, (N, H, W) for a batch, and a list of (H, W) arrays for a DataFrame. Each image is
letterboxed to the training size exactly as the preprocess stage did
(`segflow.preprocess.letterbox`), predicted, the padding cropped, and the mask resized
back with nearest-neighbour interpolation (labels are not interpolated).
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
import torch
from torch import nn

from segflow.model import load_checkpoint
from segflow.preprocess import content_size, letterbox

__all__ = ["CHECKPOINT", "IMAGE_COLUMN", "SegmentationModel", "decode_image", "encode_png"]

#: Key of the checkpoint file among the pyfunc model's artifacts.
CHECKPOINT = "checkpoint"
#: DataFrame column holding base64-encoded image files.
IMAGE_COLUMN = "image"
#: Images per forward pass: bounds memory when a request holds many large photos.
BATCH_SIZE = 8


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


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Any numeric (H, W), (H, W, 3) or (H, W, 4) array -> (H, W, 3) uint8."""
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image.astype(np.float64)), 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


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
        self.image_size = 0
        #: Size of the weights file, reported by `segflow promote` (0 when unknown).
        self.checkpoint_bytes = 0

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        path = Path(context.artifacts[CHECKPOINT])
        net, meta = load_checkpoint(path)
        self.attach(net, meta["image_size"], path.stat().st_size)

    def attach(self, net: nn.Module, image_size: int, checkpoint_bytes: int = 0) -> SegmentationModel:
        """Use `net`: (N, 3, S, S) float RGB 0..255 -> (N, C, S, S) logits, S = `image_size`."""
        self.net = net.eval()
        self.image_size = image_size
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

    @torch.inference_mode()
    def predict_masks(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One (H, W) uint8 mask per image (H, W, 3), each at its image's size."""
        if self.net is None:
            raise RuntimeError("no network: load the model with mlflow.pyfunc.load_model")
        device = next(self.net.parameters(), torch.empty(0)).device
        masks: list[np.ndarray] = []
        for start in range(0, len(images), BATCH_SIZE):
            chunk = [_as_rgb(np.asarray(image)) for image in images[start : start + BATCH_SIZE]]
            boxed = []
            for image in chunk:
                # letterbox wants a mask too; this one is discarded.
                boxed.append(letterbox(image, np.zeros(image.shape[:2], np.uint8), self.image_size, 0)[0])
            batch = torch.from_numpy(np.stack(boxed).transpose(0, 3, 1, 2)).float().to(device)
            predicted = self.net(batch).argmax(1).to(torch.uint8).cpu().numpy()
            for image, mask in zip(chunk, predicted):
                height, width = image.shape[:2]
                # The image sits at the top left of the letterbox: crop it, then size it back.
                inner_h, inner_w = content_size(height, width, self.image_size)
                inner = mask[:inner_h, :inner_w]
                masks.append(cv2.resize(inner, (width, height), interpolation=cv2.INTER_NEAREST))
        return masks
