"""params.yaml, validated.

`params.yaml` is the one source of hyperparameters. Each top-level section is a
pydantic model with ``extra="forbid"``, so a misspelt key stops the stage with a
message that names the key and lists the allowed ones, instead of being ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segflow.errors import ConfigError

__all__ = [
    "LOSS_TERMS",
    "ClassesParams",
    "FetchParams",
    "RasterizeParams",
    "PreprocessParams",
    "ModelParams",
    "AugmentParams",
    "TrainParams",
    "EvaluateParams",
    "MlflowParams",
    "Params",
    "load_params",
]


#: Loss terms `train.loss` may name, alone or joined by "+" (see segflow.losses).
LOSS_TERMS = ("ce", "dice", "focal", "lovasz", "tversky", "mse")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ClassesParams(_Section):
    #: Class names; a class's index in this list is its value in the masks.
    names: list[str] = Field(min_length=2)
    #: Annotation label -> class name, for labels that differ from class names.
    label_map: dict[str, str] = {}
    #: Mask value for pixels that the loss and the metrics skip (padding, "ignore").
    ignore_index: int = Field(255, ge=0, le=255)
    #: RGB colour per class for pictures (same order as names); empty = a default palette.
    palette: list[tuple[int, int, int]] = []

    @field_validator("names")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"class names must be unique; repeated: {duplicates}")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> "ClassesParams":
        unknown = sorted(set(self.label_map.values()) - set(self.names))
        if unknown:
            raise ValueError(f"label_map maps to {unknown}, which are not in names {self.names}")
        if self.palette and len(self.palette) != len(self.names):
            raise ValueError(
                f"palette has {len(self.palette)} colours for {len(self.names)} classes; give one "
                "[r, g, b] per class or leave it empty"
            )
        if any(not 0 <= c <= 255 for colour in self.palette for c in colour):
            raise ValueError("palette colours are [r, g, b] with values 0..255")
        if self.ignore_index < len(self.names):
            raise ValueError(
                f"ignore_index {self.ignore_index} is a class index (there are {len(self.names)} "
                "classes); use a value >= the number of classes, e.g. 255"
            )
        return self

    def class_of(self, label: str) -> str:
        """The class name an annotation label maps to (may be outside `names`)."""
        return self.label_map.get(label, label)


class FetchParams(_Section):
    #: Folder holding the annotation file and the images (default: the DVC-tracked data/).
    source: Path = Path("data")
    #: Annotation file inside `source`; images are found relative to its folder.
    annotations: Path = Path("via_region_data.csv")
    #: Reader; `auto` picks from the file extension.
    format: Literal["auto", "via_csv", "via_json"] = "auto"
    #: region_attributes key that holds the label (VIA users name it freely).
    label_key: str = "label"


class RasterizeParams(_Section):
    #: What pixels with no region become: a class name (usually background) or "ignore".
    unlabeled: str = "background"


class PreprocessParams(_Section):
    #: Side of the square network input; images are resized keeping aspect, then padded.
    image_size: int = Field(128, ge=32, le=4096)
    #: Fractions of images in the validation and test splits; the rest is training.
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, size: int) -> int:
        # A U-Net of depth 5 halves the resolution five times.
        if size % 32:
            raise ValueError(f"must be a multiple of 32 (a U-Net halves it 5 times), got {size}")
        return size

    @model_validator(mode="after")
    def _room_for_training(self) -> "PreprocessParams":
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self


class ModelParams(_Section):
    #: smp architecture name (see segmentation_models_pytorch.create_model).
    arch: str = "Unet"
    #: smp encoder name, e.g. resnet18, mobilenet_v2, efficientnet-b0.
    encoder: str = "resnet18"
    #: null = random init, or a local file with a state dict of the encoder.
    #: Nothing is downloaded at run time.
    encoder_weights: Path | None = None


class AugmentParams(_Section):
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


class TrainParams(_Section):
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(3e-3, gt=0.0)
    #: Adam's L2 penalty; small data overfits without some.
    weight_decay: float = Field(1e-4, ge=0.0)
    #: Loss name, or several joined by "+": ce, dice, focal, lovasz, tversky, mse.
    loss: str = "ce+dice"
    #: Cross-entropy class weights from the training split's pixel shares:
    #: none | inverse | sqrt_inverse (rare classes otherwise barely move the loss).
    class_weights: Literal["none", "inverse", "sqrt_inverse"] = "sqrt_inverse"
    #: Learning-rate schedule over all epochs: none | cosine | onecycle.
    scheduler: Literal["none", "cosine", "onecycle"] = "onecycle"
    #: Stop after this many epochs without a better val mIoU (0 = never stop early).
    early_stopping_patience: int = Field(0, ge=0)
    #: Clip the gradient norm to this (0 = no clipping); guards against loss spikes.
    grad_clip: float = Field(1.0, ge=0.0)
    #: auto = CUDA when present, else CPU.
    device: Literal["auto", "cpu", "cuda"] = "auto"
    #: Mixed precision on CUDA (ignored on CPU, where it is slower).
    amp: bool = True
    #: DataLoader worker processes; 0 loads in the main process.
    num_workers: int = Field(0, ge=0)
    #: Continue an interrupted run from its last finished epoch.
    resume: bool = True

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        terms = [term.strip() for term in name.split("+")]
        unknown = [term for term in terms if term not in LOSS_TERMS]
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; use {list(LOSS_TERMS)}, or several joined by '+'")
        return "+".join(terms)


class EvaluateParams(_Section):
    #: How many of the best and of the worst test images the pictures show.
    examples: int = Field(4, ge=0)


class MlflowParams(_Section):
    experiment: str = "segflow"
    #: Registered model name; each train run adds a version with alias `candidate`.
    model_name: str = "segflow-unet"


class Params(_Section):
    #: One seed drives the split, the initial weights, augmentation and batch order.
    seed: int = 0
    classes: ClassesParams
    fetch: FetchParams = FetchParams()
    rasterize: RasterizeParams = RasterizeParams()
    preprocess: PreprocessParams = PreprocessParams()
    model: ModelParams = ModelParams()
    augment: AugmentParams = AugmentParams()
    train: TrainParams = TrainParams()
    evaluate: EvaluateParams = EvaluateParams()
    mlflow: MlflowParams = MlflowParams()

    @model_validator(mode="after")
    def _unlabeled_is_a_class(self) -> "Params":
        choice = self.rasterize.unlabeled
        if choice != "ignore" and choice not in self.classes.names:
            raise ValueError(
                f"rasterize.unlabeled is {choice!r}; choose 'ignore' or a class from "
                f"classes.names {self.classes.names}"
            )
        return self

    @property
    def unlabeled_value(self) -> int:
        """Mask value of pixels that no region covers."""
        if self.rasterize.unlabeled == "ignore":
            return self.classes.ignore_index
        return self.classes.names.index(self.rasterize.unlabeled)


def _describe(error: dict, model: type[BaseModel]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        section: type[BaseModel] | None = model
        for part in error["loc"][:-1]:
            field = section.model_fields.get(str(part)) if section else None
            annotation = field.annotation if field else None
            section = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        allowed = sorted(section.model_fields) if section else []
        return f"{key}: unknown key; allowed keys here: {allowed}"
    return f"{key}: {error['msg']} (got {error.get('input')!r})"


def load_params(path: Path) -> Params:
    """Read and validate params.yaml.

    Raises:
        ConfigError: naming every bad key, what is wrong, and what is allowed.
    """
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read params ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "\n  ".join(_describe(error, Params) for error in exc.errors())
        raise ConfigError(f"{path}: invalid params:\n  {problems}") from None
