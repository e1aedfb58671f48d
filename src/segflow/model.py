"""The segmentation network: an smp model that carries its own input normalisation.

The network takes raw RGB pixels, float32 in 0..255, so a served model needs no side
file describing how to normalise; the ImageNet mean and std live in its buffers.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segflow.config import Params
from segflow.errors import ConfigError

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SegmentationNet",
    "build_model",
    "model_from_params",
    "load_encoder_weights",
    "save_checkpoint",
    "load_checkpoint",
]

#: ImageNet channel statistics (RGB, 0..1): smp encoders expect inputs normalised by them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationNet(nn.Module):
    """smp model + normalisation.

    forward(x): x (N, 3, H, W) float32 RGB in 0..255, H and W multiples of 32
    -> logits (N, num_classes, H, W).
    """

    def __init__(self, arch: str, encoder: str, num_classes: int) -> None:
        super().__init__()
        # encoder_weights=None: nothing is downloaded at run time.
        self.net = smp.create_model(arch, encoder_name=encoder, encoder_weights=None, classes=num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def build_model(arch: str, encoder: str, num_classes: int) -> SegmentationNet:
    """Create the network, with errors that list the valid choices."""
    archs = sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    if arch.lower() not in {name.lower() for name in archs}:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; choose from {archs}")
    encoders = smp.encoders.get_encoder_names()
    if encoder not in encoders and not encoder.startswith("tu-"):
        raise ConfigError(
            f"model.encoder: unknown encoder {encoder!r}; choose from {sorted(encoders)} "
            "or a timm encoder as 'tu-<name>'"
        )
    return SegmentationNet(arch, encoder, num_classes)


def load_encoder_weights(model: SegmentationNet, path: Path) -> None:
    """Initialise the encoder from a local state-dict file, checking every key.

    Raises:
        ConfigError: the file cannot be read, or its keys or shapes do not match the
            encoder (the message lists the first missing and unexpected keys).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError, EOFError) as exc:
        raise ConfigError(f"model.encoder_weights: cannot load {path} ({exc}); give a torch state-dict file") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"model.encoder_weights: {path} holds a {type(state).__name__}, not a state dict")
    own = model.net.encoder.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    mismatched = [
        f"{key} {tuple(state[key].shape)} != {tuple(own[key].shape)}"
        for key in own if key in state and hasattr(state[key], "shape") and state[key].shape != own[key].shape
    ]
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"model.encoder_weights: {path} does not fit encoder {model.net.encoder.__class__.__name__}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]}, {len(mismatched)} shape mismatches {mismatched[:5]}; "
            "save the state dict of the same encoder (model.encoder in params.yaml)"
        )
    model.net.encoder.load_state_dict(state)


def model_from_params(params: Params) -> SegmentationNet:
    """`build_model` with the architecture and classes from params, plus encoder weights."""
    model = build_model(params.model.arch, params.model.encoder, len(params.classes.names))
    if params.model.encoder_weights is not None:
        load_encoder_weights(model, params.model.encoder_weights)
    return model


def save_checkpoint(model: SegmentationNet, params: Params, path: Path, **extra: object) -> None:
    """Save weights with what is needed to rebuild the network."""
    torch.save(
        {
            "state_dict": model.state_dict(),
            "arch": params.model.arch,
            "encoder": params.model.encoder,
            "class_names": list(params.classes.names),
            "image_size": params.preprocess.image_size,
            **extra,
        },
        path,
    )


def load_checkpoint(path: Path) -> tuple[SegmentationNet, dict]:
    """Rebuild the network saved by `save_checkpoint`; returns (model in eval mode, metadata)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(checkpoint["arch"], checkpoint["encoder"], len(checkpoint["class_names"]))
    model.load_state_dict(checkpoint.pop("state_dict"))
    return model.eval(), checkpoint
