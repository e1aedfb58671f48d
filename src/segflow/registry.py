"""The MLflow model registry: registering versions and listing them.

Versions are addressed by alias (`candidate`, `champion`), never as "latest". Each
registration is a self-contained pyfunc (`segflow.pyfunc`) with a model card
(`segflow.model_card`) logged to its run. The first version of a model becomes
`@champion` without a comparison; later ones get there through `segflow.promote`. How
the champion alias moves, safely and with evidence, is `segflow.champion`.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version as package_version
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

import segflow
from segflow import tracking
from segflow.champion import (
    RegistryError, champion_lock, champion_version, move_champion, record_decision, set_champion_history,
)
from segflow.config import Params
from segflow.model import SegmentationNet, save_checkpoint
from segflow.model_card import render_model_card
from segflow.pyfunc import CHECKPOINT, IMAGE_COLUMN, SegmentationModel, encode_png
from segflow.scoring import Scores, class_shares, load_test_split, score
from segflow.visualize import palette

__all__ = ["MODEL_CARD", "PACKAGES", "register_model", "requirements", "list_versions"]

log = logging.getLogger(__name__)

#: Run artifact holding a version's model card.
MODEL_CARD = "model_card.md"
#: Packages the served model imports, pinned to the versions it was trained with (named,
#: not inferred: inference imports the model in a subprocess and is slow).
PACKAGES = (
    "torch", "segmentation-models-pytorch", "timm", "opencv-python-headless", "numpy",
    "pandas", "pydantic", "pyyaml", "tqdm", "cloudpickle",
)
#: Inputs are open (an array or a DataFrame of base64 images: a schema cannot say "or");
#: the output is class indices.
SIGNATURE = ModelSignature(outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1), "mask")]))


def requirements() -> list[str]:
    """pip requirements of the served model: every package in PACKAGES, pinned."""
    pins = []
    for name in PACKAGES:
        try:
            pins.append(f"{name}=={package_version(name).split('+')[0]}")
        except PackageNotFoundError:
            log.warning("%s is not installed: the model's requirements leave it out", name)
    return pins


def _example_image() -> np.ndarray:
    """A small non-square RGB picture: the logged input example (sky over road)."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:20] = (120, 170, 230)
    image[20:] = (110, 100, 110)
    return image


def register_model(
    model: SegmentationNet, params: Params, tags: dict[str, str], *,
    data_dir: Path | None = None, record_dir: Path | None = None,
) -> str:
    """Log `model` to the active run as a pyfunc, register it, point `candidate` at it.

    Args:
        tags: the run's code and data versions (git_commit, data_md5, ...), copied to
            the model version.
        data_dir: the preprocess folder: when given, the model is scored on its frozen
            test split (metrics in the model's metadata, tags and card) and the card gets
            the class shares.
        record_dir: where the "first champion" decision JSON is written, if it is one.
    Returns:
        The new version number.
    """
    run = mlflow.active_run()
    if run is None:
        raise RegistryError("register_model logs to the active run: call it inside mlflow.start_run()")
    name, names = params.mlflow.model_name, list(params.classes.names)
    size, ignore = params.preprocess.image_size, params.classes.ignore_index
    scores, split, shares = None, None, (None, None)
    with tempfile.TemporaryDirectory(prefix="segflow-model-") as tmp:
        checkpoint = Path(tmp) / "model.pt"
        save_checkpoint(model, params, checkpoint)
        if data_dir is not None:
            split = load_test_split(data_dir)
            scorer = SegmentationModel().attach(model, size, checkpoint.stat().st_size)
            scores = score(scorer, split, names, ignore)
            train_masks = Path(data_dir) / "train_masks.npy"
            train_shares = None
            if train_masks.is_file():
                train_shares = class_shares(np.load(train_masks, mmap_mode="r"), len(names), ignore)
            shares = (train_shares, class_shares(split.masks, len(names), ignore))
        # A clean copy of the package (no __pycache__) travels with the model.
        code = Path(tmp) / "code" / "segflow"
        shutil.copytree(Path(segflow.__file__).parent, code, ignore=shutil.ignore_patterns("__pycache__"))
        metadata = {
            "segflow_version": segflow.__version__,
            "class_names": names,
            "palette": palette(len(names), params.classes.palette).tolist(),
            "image_size": size,
            "ignore_index": ignore,
            "input": "RGB array (H, W, 3) or (N, H, W, 3), or DataFrame column 'image' of base64 PNG/JPEG",
            "output": "uint8 class indices at the input size: (H, W), (N, H, W), or a list for a DataFrame",
        }
        if scores is not None:
            summary = scores.as_dict()
            metadata["test_metrics"] = {
                "split_sha256": split.sha256, "images": scores.images,
                **{key: summary[key] for key in ("miou", "mdice", "pixel_accuracy")},
                "iou": dict(zip(names, summary["iou"])),
            }
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SegmentationModel(),
            artifacts={CHECKPOINT: str(checkpoint)},
            code_paths=[str(code)],
            pip_requirements=requirements(),
            signature=SIGNATURE,
            input_example=pd.DataFrame({IMAGE_COLUMN: [encode_png(_example_image())]}),
            metadata=metadata,
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, tracking.CANDIDATE, version)
    card = render_model_card(name, version, run.info.run_id, params, tags, scores, *shares,
                             split.sha256 if split else None)
    mlflow.log_text(card, MODEL_CARD)
    version_tags = {
        **tags, "arch": params.model.arch, "encoder": params.model.encoder, "image_size": str(size),
        "model_card": f"runs:/{run.info.run_id}/{MODEL_CARD}",
    }
    if scores is not None:
        version_tags.update(test_miou=f"{scores.miou:.5f}", test_mdice=f"{scores.mdice:.5f}", split_sha256=split.sha256)
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    _crown_first(client, name, version, scores, split.sha256 if split else None, tags, record_dir)
    return version


def _crown_first(
    client: mlflow.MlflowClient, name: str, version: str, scores: Scores | None,
    split_sha256: str | None, tags: dict[str, str], record_dir: Path | None,
) -> None:
    """Make `version` champion if the model has none yet ("first model"), and record it."""
    with champion_lock(name):
        if champion_version(client, name) is not None:
            return
        move_champion(client, name, version, expected=None)
        set_champion_history(client, name, [version])
        log.info("first model: version %s of %s is champion without comparison", version, name)
        record_decision(client, name, version, {
            "action": "promote", "outcome": "first champion", "model": name, "version": version,
            "champion_before": None, "champion_after": version,
            "reasons": ["first model: champion without comparison"], "rule": None,
            "metrics": {"candidate": scores.as_dict() if scores else None, "champion": None},
            "test_split": {"sha256": split_sha256},
            "code": {key: tags.get(key, "unknown") for key in ("git_commit", "git_dirty")},
            "data_md5": tags.get("data_md5", "unknown"),
        }, record_dir)


def _number(text: str | None) -> float | None:
    try:
        return float(text)
    except (TypeError, ValueError):  # absent, or "None" (evaluate writes NaN scores so)
        return None


def list_versions(client: mlflow.MlflowClient, name: str) -> list[dict]:
    """Every version of `name`, newest first: aliases, test mIoU, data and code, created."""
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        raise
    by_version: dict[str, list[str]] = {}
    for alias, number in aliases.items():
        by_version.setdefault(str(number), []).append(alias)
    rows = []
    for found in client.search_model_versions(f"name='{name}'"):
        tags = found.tags
        rows.append({
            "version": str(found.version),
            "aliases": sorted(by_version.get(str(found.version), [])),
            "test_miou": _number(tags.get("test_miou")),
            "data_md5": tags.get("data_md5"),
            "git_commit": tags.get("git_commit"),
            "git_dirty": tags.get("git_dirty") == "true",
            "created": datetime.fromtimestamp(found.creation_timestamp / 1000, tz=timezone.utc),
            "run_id": found.run_id,
            "last_decision": tags.get("promote.outcome"),
        })
    return sorted(rows, key=lambda row: int(row["version"]), reverse=True)
