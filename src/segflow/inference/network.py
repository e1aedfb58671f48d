"""The segmentation network and its checkpoint file.

The network takes raw RGB pixels, float32 in 0..255, so a served model needs no side
file describing how to normalise: the mean and std its encoder weights expect live in
its buffers. A checkpoint holds the weights and what is needed to rebuild the network
(architecture, encoder, graph units, class names, input size); where the weights come from
before training (ImageNet, a file) is `segflow.training.model`'s business.

An ensemble of K networks of one architecture (the folds of a cross-validated run,
`train.folds`) is one network too (`SegmentationEnsemble`), saved in the same checkpoint
format with ``members: K``, so everything that predicts takes it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segflow.errors import ConfigError, SegflowError
from segflow.inference.graph import GraphOptions, add_glore

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SegmentationNet",
    "SegmentationEnsemble",
    "build_model",
    "CheckpointMeta",
    "save_checkpoint",
    "load_checkpoint",
]

#: ImageNet channel statistics (RGB, 0..1): smp encoders expect inputs normalised by them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class SegmentationNet(nn.Module):
    """smp model + normalisation, plus GloRe units if `graph` asks for them
    (`segflow.inference.graph`; None = the plain smp network, state-dict keys as ever).

    forward(x): x (N, 3, H, W) float32 RGB in 0..255, H and W multiples of 32
    -> logits (N, num_classes, H, W).
    """

    def __init__(
        self,
        arch: str,
        encoder: str,
        num_classes: int,
        mean: tuple[float, float, float] = IMAGENET_MEAN,
        std: tuple[float, float, float] = IMAGENET_STD,
        download_imagenet: bool = False,
        graph: GraphOptions | None = None,
    ) -> None:
        super().__init__()
        # Nothing is downloaded unless asked for (model.encoder_weights: imagenet).
        # smp wants True for a timm encoder's default pretrained tag, a name otherwise.
        weights = (True if encoder.startswith("tu-") else "imagenet") if download_imagenet else None
        self.net = smp.create_model(arch, encoder_name=encoder, encoder_weights=weights, classes=num_classes)
        # After smp's own initialisation (and download): a unit starts as the identity.
        self.graph = graph if graph is not None and graph.kind != "none" else None
        if self.graph is not None:
            add_glore(self.net, self.graph, arch)
        # Buffers, so they travel in the state dict: a loaded checkpoint keeps its statistics.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


class SegmentationEnsemble(nn.Module):
    """K networks as one: the log of the mean of their softmax probabilities.

    forward(x): x (N, 3, H, W) float32 RGB in 0..255 -> (N, num_classes, H, W) log-probabilities.
    These are logits to everything downstream: softmax gives back the mean probabilities,
    so the argmax, the confidence, tile blending and the ONNX graph treat the ensemble as
    any network (at K times the work).
    """

    def __init__(self, members: Sequence[SegmentationNet]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one network")
        self.members = nn.ModuleList(members)

    @property
    def graph(self) -> GraphOptions | None:
        """The members' GloRe units (one architecture, so the first member's)."""
        return self.members[0].graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # logsumexp of log-softmaxes: the mean probability without underflow to log(0).
        logs = torch.stack([torch.log_softmax(member(x).float(), dim=1) for member in self.members])
        return torch.logsumexp(logs, dim=0) - math.log(len(self.members))


def check_names(arch: str, encoder: str) -> None:
    """Raise a ConfigError listing the valid choices if `arch` or `encoder` is unknown to smp."""
    archs = sorted(smp.MODEL_ARCHITECTURES_MAPPING)
    if arch.lower() not in {name.lower() for name in archs}:
        raise ConfigError(f"model.arch: unknown architecture {arch!r}; choose from {archs}")
    encoders = smp.encoders.get_encoder_names()
    if encoder not in encoders and not encoder.startswith("tu-"):
        raise ConfigError(
            f"model.encoder: unknown encoder {encoder!r}; choose from {sorted(encoders)} "
            "or a timm encoder as 'tu-<name>'"
        )


def build_model(
    arch: str,
    encoder: str,
    num_classes: int,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    graph: GraphOptions | None = None,
) -> SegmentationNet:
    """Create the network (random weights), with errors that list the valid choices."""
    check_names(arch, encoder)
    return SegmentationNet(arch, encoder, num_classes, mean, std, graph=graph)


@dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint holds beside the weights: how to rebuild the network and run it,
    and (from training) which epoch and score it is. Written by `save_checkpoint`, read by
    `load_checkpoint`, one key per field, in this order; a training field left None is not
    written."""

    arch: str
    encoder: str
    class_names: tuple[str, ...]
    #: The working long side (pixels) and the inference tile [height, width].
    long_side: int | None
    tile: tuple[int, int]
    #: Test-time horizontal flip (``model.tta_flip``).
    flip: bool = False
    #: The GloRe units and an ensemble's size: read from the network when it is saved.
    graph: GraphOptions | None = None
    members: int | None = None
    #: Cross-validation (`segflow.training.folds`): K, "ensemble" or "best", the mean
    #: out-of-fold mIoU, and the fold a "best" model comes from.
    folds: int | None = None
    fold_model: str | None = None
    cv_miou_mean: float | None = None
    fold: int | None = None
    #: The best epoch (None for an ensemble) and its validation mIoU.
    epoch: int | None = None
    val_miou: float | None = None


#: The fields written after the network's; ``members`` comes last (the network's, read at save).
_RECORD = ("folds", "fold_model", "cv_miou_mean", "fold", "epoch", "val_miou")


def save_checkpoint(model: SegmentationNet | SegmentationEnsemble, path: Path, meta: CheckpointMeta) -> None:
    """Save the weights with `meta`, the one writer of the checkpoint file.

    The graph units are read from `model` itself (``graph``: None or the `GraphOptions`
    as a dict), so a checkpoint cannot describe a network other than the one it holds; so
    is an ensemble's size (``members``: K, absent for a single network).
    """
    record = {key: getattr(meta, key) for key in _RECORD if getattr(meta, key) is not None}
    if isinstance(model, SegmentationEnsemble):
        record["members"] = len(model.members)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "arch": meta.arch,
            "encoder": meta.encoder,
            "class_names": list(meta.class_names),
            "long_side": None if meta.long_side is None else int(meta.long_side),
            "tile": [int(meta.tile[0]), int(meta.tile[1])],
            "flip": bool(meta.flip),
            "graph": None if model.graph is None else asdict(model.graph),
            **record,
        },
        path,
    )


def _meta(fields: dict, path: Path) -> CheckpointMeta:
    """`fields` (a checkpoint less its weights) as a CheckpointMeta, or an error naming the key."""
    known = {field.name for field in dataclass_fields(CheckpointMeta)}
    unknown = sorted(set(fields) - known)
    missing = sorted({"arch", "encoder", "class_names", "long_side", "tile"} - set(fields))
    if unknown or missing:
        raise SegflowError(
            f"{path}: not a segflow checkpoint of this version (unknown keys {unknown}, missing keys "
            f"{missing}): save it with segflow.inference.network.save_checkpoint, or retrain (`dvc repro train`)"
        )
    graph = fields.get("graph")
    return CheckpointMeta(
        **{
            **fields,
            "class_names": tuple(fields["class_names"]),
            "tile": (int(fields["tile"][0]), int(fields["tile"][1])),
            "graph": None if graph is None else GraphOptions(**graph),
        }
    )


def load_checkpoint(path: Path) -> tuple[SegmentationNet | SegmentationEnsemble, CheckpointMeta]:
    """Rebuild the network saved by `save_checkpoint`; returns (model in eval mode, metadata),
    the one reader of the checkpoint file.

    A checkpoint from before graph units (no ``graph``) is a plain network; one with
    ``members`` K is a `SegmentationEnsemble` of K of them.

    Raises:
        SegflowError: an unknown or missing key (the message names the file and the keys).
    """
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.pop("state_dict")
    meta = _meta(checkpoint, path)

    def network() -> SegmentationNet:
        return build_model(meta.arch, meta.encoder, len(meta.class_names), graph=meta.graph)

    model = SegmentationEnsemble([network() for _ in range(meta.members)]) if meta.members else network()
    model.load_state_dict(state)
    return model.eval(), meta
