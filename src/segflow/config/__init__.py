"""params.yaml, validated.

`params.yaml` is the one source of hyperparameters. Each top-level section is a
pydantic model with ``extra="forbid"``, so a misspelt key stops the stage with a
message that names the key and lists the allowed ones, instead of being ignored.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError, model_validator

from segflow.config.base import IGNORE, Section
from segflow.config.data import AUTO, ClassesParams, FetchParams, PreprocessParams, RasterizeParams
from segflow.config.predict import PredictParams
from segflow.config.registry import MlflowParams, PromoteParams, ServeParams
from segflow.config.training import (
    ENCODER_WEIGHT_CHOICES,
    LOSS_TERMS,
    OFFLINE_ENCODER,
    AugmentParams,
    EvaluateParams,
    ModelParams,
    TrainParams,
)
from segflow.errors import ConfigError

__all__ = [
    "AUTO",
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
    "PredictParams",
    "Params",
    "load_params",
]


class Params(Section):
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
    predict: PredictParams = PredictParams()

    @model_validator(mode="after")
    def _unlabeled_is_a_class(self) -> Params:
        choice = self.rasterize.unlabeled
        names = ["background"] if self.classes.names == AUTO else self.classes.names  # auto starts so
        if choice != "ignore" and choice not in names:
            raise ValueError(
                f"rasterize.unlabeled is {choice!r}; choose 'ignore' or a class from classes.names {self.classes.names}"
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
