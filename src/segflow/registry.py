"""The MLflow model registry: registering trained models under aliases.

Versions are addressed by alias (`candidate`, `champion`), never as "latest".
"""
from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature

import segflow
from segflow import tracking
from segflow.config import Params
from segflow.model import SegmentationNet

__all__ = ["register_model"]


def register_model(model: SegmentationNet, params: Params, tags: dict[str, str]) -> str:
    """Log `model` to the active run, register it, and point the `candidate` alias at it."""
    size = params.preprocess.image_size
    example = np.zeros((1, 3, size, size), dtype=np.float32)
    with torch.no_grad():
        output = model(torch.from_numpy(example)).numpy()
    info = mlflow.pytorch.log_model(
        model,
        name="model",
        signature=infer_signature(example, output),
        input_example=example,
        registered_model_name=params.mlflow.model_name,
        # The network class lives in segflow: ship its code with the model, and name the
        # requirements instead of letting MLflow infer them (slow, and it imports the model).
        code_paths=[str(Path(segflow.__file__).parent)],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "segmentation-models-pytorch"],
        metadata={"class_names": list(params.classes.names), "image_size": size},
    )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(params.mlflow.model_name, tracking.CANDIDATE, version)
    for key, value in tags.items():
        client.set_model_version_tag(params.mlflow.model_name, version, key, value)
    return version
