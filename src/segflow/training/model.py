"""The network to train: `segflow.inference.network.SegmentationNet` with its first weights.

The network normalises its own input with the mean and std its encoder weights expect
(ImageNet's by default; 0.5/0.5 for the offline EfficientNet-Lite0).

Encoder weights (`model.encoder_weights`): null = random; a state-dict file; imagenet-offline
= the packaged EfficientNet-Lite0 (segflow.training.pretrained); imagenet = smp/timm's download,
the only choice that touches the network, and only when asked for.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import segmentation_models_pytorch as smp
import timm
import torch

from segflow.config import OFFLINE_ENCODER, Params
from segflow.errors import ConfigError
from segflow.inference.graph import GraphOptions
from segflow.inference.network import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CheckpointMeta,
    SegmentationNet,
    build_model,
    check_names,
)
from segflow.prepared import Plan
from segflow.training.pretrained import OFFLINE_MEAN, OFFLINE_STD, fit_state, load_offline_state

__all__ = [
    "model_from_params",
    "load_encoder_weights",
    "load_offline_weights",
    "pretrained_stats",
    "checkpoint_meta",
]


def pretrained_stats(encoder: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) in 0..1 units that `encoder`'s ImageNet weights expect, read offline.

    timm's pretrained config for a "tu-" encoder (tf_ ports use 0.5/0.5); ImageNet's
    statistics for smp's own encoders, whose "imagenet" weights all use them.
    """
    if encoder.startswith("tu-"):
        config = timm.models.get_pretrained_cfg(encoder[3:])
        if config is not None:
            return tuple(config.mean), tuple(config.std)
    return IMAGENET_MEAN, IMAGENET_STD


def _download_imagenet(arch: str, encoder: str, num_classes: int, graph: GraphOptions | None = None) -> SegmentationNet:
    """`build_model` with smp/timm's ImageNet download; no network is a ConfigError."""
    check_names(arch, encoder)
    if encoder.startswith("tu-"):
        available = timm.models.is_model_pretrained(encoder[3:])
    else:
        available = "imagenet" in smp.encoders.encoders[encoder]["pretrained_settings"]
    if not available:
        raise ConfigError(
            f"model.encoder_weights: encoder {encoder!r} has no ImageNet weights to download; "
            "choose another encoder, null, or a state-dict file"
        )
    mean, std = pretrained_stats(encoder)
    try:
        return SegmentationNet(arch, encoder, num_classes, mean, std, download_imagenet=True, graph=graph)
    except OSError as exc:  # no network, DNS failure, or the hub's "not in the local cache"
        raise ConfigError(
            f"model.encoder_weights: imagenet: cannot download the {encoder} weights "
            f"({type(exc).__name__}: {str(exc)[:200]}). Without the network, use "
            f"encoder_weights: imagenet-offline with encoder: {OFFLINE_ENCODER} (installed with "
            "segflow), or a local state-dict file of this encoder"
        ) from None


def load_offline_weights(model: SegmentationNet) -> None:
    """Initialise a tu-tf_efficientnet_lite0 encoder from the packaged ImageNet weights.

    Raises:
        ConfigError: the package is missing, or its weights do not fit the encoder.
    """
    encoder = model.net.encoder
    encoder.load_state_dict(fit_state(load_offline_state(), encoder, prefix="model."))


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
        for key in own
        if key in state and hasattr(state[key], "shape") and state[key].shape != own[key].shape
    ]
    if missing or unexpected or mismatched:
        raise ConfigError(
            f"model.encoder_weights: {path} does not fit encoder {model.net.encoder.__class__.__name__}: "
            f"{len(missing)} missing keys {missing[:5]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:5]}, {len(mismatched)} shape mismatches {mismatched[:5]}; "
            "save the state dict of the same encoder (model.encoder in params.yaml)"
            + (
                f", or use encoder_weights: imagenet-offline with encoder: {OFFLINE_ENCODER} for "
                "these efficientnet_pytorch-named weights"
                if any(str(k).startswith("_blocks.") for k in state)
                else ""
            )
        )
    model.net.encoder.load_state_dict(state)


def model_from_params(params: Params) -> SegmentationNet:
    """`build_model` with the architecture and classes from params, plus encoder weights.

    The model's mean/std are those its encoder weights expect (ImageNet's for random init).
    GloRe units (`model.graph`) leave the encoder as it is, so its weights load the same way.
    """
    arch, encoder, weights = params.model.arch, params.model.encoder, params.model.encoder_weights
    num_classes, graph = len(params.classes.names), GraphOptions.from_params(params.model)
    if weights == "imagenet":
        return _download_imagenet(arch, encoder, num_classes, graph)
    if weights == "imagenet-offline":
        # ModelParams has checked that the encoder is OFFLINE_ENCODER.
        model = build_model(arch, encoder, num_classes, OFFLINE_MEAN, OFFLINE_STD, graph)
        load_offline_weights(model)
        return model
    if weights is None:
        return build_model(arch, encoder, num_classes, graph=graph)
    model = build_model(arch, encoder, num_classes, *pretrained_stats(encoder), graph=graph)
    load_encoder_weights(model, weights)
    return model


def checkpoint_meta(params: Params, plan: Plan, **record: object) -> CheckpointMeta:
    """The one place a checkpoint's metadata is built: the network from params, the working
    long side and inference tile from the preprocess stage's plan, and the training
    `record` (epoch, val_miou, folds...: `segflow.training.folds.final_model`). The GloRe
    units and an ensemble's size `save_checkpoint` reads from the model: the network says
    what it is."""
    return CheckpointMeta(
        arch=params.model.arch,
        encoder=params.model.encoder,
        class_names=tuple(params.classes.names),
        long_side=plan.long_side,
        tile=plan.tile,
        flip=params.model.tta_flip,
        **record,
    )
