"""The MLflow model registry: registering versions, recording their test scores, listing them.

Versions are addressed by alias (`candidate`, `champion`), never as "latest". The train
stage registers each model as a self-contained pyfunc (`segflow.registry.pyfunc`: its code
is the inference closure, `code_files`, and its pip requirements are pinned and complete,
`requirements`). The evaluate stage then scores it once and `record_test_scores` writes
the result: the version's ``test_*`` tags, the model card (`segflow.registry.model_card`)
in its run, and, for a model's first version, `@champion` without a comparison; later ones
get there through `segflow.registry.promote`. How the champion alias moves, safely and
with evidence, is `segflow.registry.champion`.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec
from packaging.markers import default_environment
from packaging.requirements import Requirement

import segflow
from segflow.colours import palette
from segflow.config import Params
from segflow.inference.network import CheckpointMeta, SegmentationNet, save_checkpoint
from segflow.registry import tracking
from segflow.registry.champion import (
    Outcome,
    RegistryError,
    champion_lock,
    champion_version,
    move_champion,
    record_decision,
    set_champion_history,
)
from segflow.registry.model_card import render_model_card
from segflow.registry.pyfunc import CHECKPOINT, IMAGE_COLUMN, SegmentationModel, encode_png
from segflow.registry.scoring import Scores, class_shares
from segflow.registry.versions import import_path_kept

__all__ = [
    "MODEL_CARD",
    "PACKAGES",
    "CODE",
    "code_files",
    "requirements",
    "register_model",
    "record_test_scores",
    "list_versions",
]

log = logging.getLogger(__name__)

#: Run artifact holding a version's model card.
MODEL_CARD = "model_card.md"
#: Distributions the served model imports (segflow.inference and segflow.registry.pyfunc),
#: named, not inferred: MLflow's inference imports the model in a subprocess and is slow.
#: `requirements` pins them and everything they require, as installed here.
PACKAGES = ("mlflow", "torch", "segmentation-models-pytorch", "opencv-python-headless", "numpy", "pandas")
#: The code a registered model carries, relative to the folder holding the segflow package:
#: the pyfunc and what it imports (tests/test_layout.py checks this is its import closure).
CODE = (
    "segflow/__init__.py",
    "segflow/errors.py",
    "segflow/inference",
    "segflow/registry/__init__.py",
    "segflow/registry/pyfunc.py",
)
#: Inputs are open (an array or a DataFrame of base64 images: a schema cannot say "or");
#: the output is class indices.
SIGNATURE = ModelSignature(outputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1), "mask")]))


def code_files(dst: Path) -> Path:
    """Copy `CODE` (no caches) into `dst`/segflow; returns that folder, for ``code_paths``."""
    root = Path(segflow.__file__).parent.parent
    for relative in CODE:
        source, target = root / relative, dst / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, target)
    return dst / "segflow"


def requirements() -> list[str]:
    """pip requirements of the served model: `PACKAGES` and all they require, pinned.

    Pinning the whole closure (not only the direct packages) makes a fresh environment
    built from the model's requirements.txt resolve to the versions it was tested with.
    """
    environment = default_environment()
    pins: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    # (distribution, extra): an extra a requirement asks for (torch's cuda-toolkit[cublas,...])
    # brings packages of its own.
    pending = [(name, "") for name in PACKAGES]
    while pending:
        name, extra = pending.pop()
        key = name.lower().replace("_", "-")
        if (key, extra) in seen:
            continue
        seen.add((key, extra))
        try:
            found = distribution(name)
        except PackageNotFoundError:
            log.warning("%s is not installed: the model's requirements leave it out", name)
            continue
        pins[key] = f"{found.metadata['Name']}=={found.version.split('+')[0]}"
        for line in found.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({**environment, "extra": extra}):
                pending.extend((requirement.name, wanted) for wanted in ["", *sorted(requirement.extras)])
    return sorted(pins.values(), key=str.lower)


def _example_image() -> np.ndarray:
    """A small non-square RGB picture: the logged input example (sky over road)."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:20] = (120, 170, 230)
    image[20:] = (110, 100, 110)
    return image


def _pyfunc_metadata(params: Params, meta: CheckpointMeta) -> dict:
    """The registered model's MLmodel metadata: what a client needs to call and draw it."""
    names = list(meta.class_names)
    return {
        "segflow_version": segflow.__version__,
        "class_names": names,
        "palette": palette(len(names), params.classes.colours(names)).tolist(),
        "long_side": meta.long_side,
        "tile": list(meta.tile),
        "ignore_index": params.classes.ignore_index,
        "input": "RGB array (H, W, 3) or (N, H, W, 3), or DataFrame column 'image' of base64 PNG/JPEG",
        "output": "uint8 class indices at the input size: (H, W), (N, H, W), or a list for a DataFrame",
    }


def register_model(
    model: SegmentationNet,
    params: Params,
    tags: dict[str, str],
    meta: CheckpointMeta,
    *,
    record_dir: Path | None = None,
) -> str:
    """Log `model` to the active run as a pyfunc, register it, point `candidate` at it, and
    make it champion if the model has none yet.

    Args:
        tags: the run's code and data versions (git_commit, data_md5, ...), copied to
            the model version.
        meta: the checkpoint's metadata (`segflow.training.model.checkpoint_meta`), saved
            with `model` as the registered version's checkpoint.
        record_dir: where the "first champion" decision JSON is written, if it is one.
    Returns:
        The new version number. Its test scores come later (`record_test_scores`).
    """
    run = mlflow.active_run()
    if run is None:
        raise RegistryError("register_model logs to the active run: call it inside mlflow.start_run()")
    name = params.mlflow.model_name
    with tempfile.TemporaryDirectory(prefix="segflow-model-") as tmp, import_path_kept():
        checkpoint = Path(tmp) / "model.pt"
        save_checkpoint(model, checkpoint, meta)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=SegmentationModel(),
            artifacts={CHECKPOINT: str(checkpoint)},
            code_paths=[str(code_files(Path(tmp) / "code"))],
            pip_requirements=requirements(),
            signature=SIGNATURE,
            input_example=pd.DataFrame({IMAGE_COLUMN: [encode_png(_example_image())]}),
            metadata=_pyfunc_metadata(params, meta),
            registered_model_name=name,
        )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, tracking.CANDIDATE, version)
    version_tags = {
        **tags,
        "arch": meta.arch,
        "encoder": meta.encoder,
        "long_side": str(meta.long_side),
        "tile": f"{meta.tile[0]}x{meta.tile[1]}",
        "model_card": f"runs:/{run.info.run_id}/{MODEL_CARD}",
    }
    for key, value in version_tags.items():
        client.set_model_version_tag(name, version, key, value)
    _crown_first(client, name, version, tags, record_dir)
    return version


def record_test_scores(
    params: Params,
    version: str,
    run_id: str,
    scores: Scores,
    split_sha256: str,
    pixel_counts: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """Write a version's test scores (the only writer of its ``test_*`` tags) and log its
    model card to `run_id`.

    Args:
        pixel_counts: each class's labelled pixels in the training and test splits, for
            the class shares in the card.
    """
    client = mlflow.MlflowClient()
    name = params.mlflow.model_name
    tags = {**client.get_run(run_id).data.tags, **client.get_model_version(name, version).tags}
    train_shares, test_shares = (
        (None, None) if pixel_counts is None else (class_shares(counts) for counts in pixel_counts)
    )
    card = render_model_card(name, version, run_id, params, tags, scores, train_shares, test_shares, split_sha256)
    client.log_text(run_id, card, MODEL_CARD)
    values = {
        "test_miou": f"{scores.miou:.5f}",
        "test_mdice": f"{scores.mdice:.5f}",
        "test_images": str(scores.images),
        "split_sha256": split_sha256,
    }
    for key, value in values.items():
        client.set_model_version_tag(name, version, key, value)


def _crown_first(
    client: mlflow.MlflowClient, name: str, version: str, tags: dict[str, str], record_dir: Path | None
) -> None:
    """Make `version` champion if the model has none yet ("first model"), and record it."""
    with champion_lock(name):
        if champion_version(client, name) is not None:
            return
        move_champion(client, name, version, expected=None)
        set_champion_history(client, name, [version])
        log.info("first model: version %s of %s is champion without comparison", version, name)
        record_decision(
            client,
            name,
            version,
            {
                "action": "promote",
                "outcome": Outcome.FIRST_CHAMPION,
                "model": name,
                "version": version,
                "champion_before": None,
                "champion_after": version,
                "reasons": ["first model: champion without comparison"],
                "rule": None,
                # Scored later by the evaluate stage: see the version's test_* tags.
                "metrics": {"candidate": None, "champion": None},
                "test_split": {"sha256": None},
                "code": {key: tags.get(key, "unknown") for key in ("git_commit", "git_dirty")},
                "data_md5": tags.get("data_md5", "unknown"),
            },
            record_dir,
        )


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
        rows.append(
            {
                "version": str(found.version),
                "aliases": sorted(by_version.get(str(found.version), [])),
                "test_miou": _number(tags.get("test_miou")),
                "data_md5": tags.get("data_md5"),
                "git_commit": tags.get("git_commit"),
                "git_dirty": tags.get("git_dirty") == "true",
                "experiment": tags.get("dvc.exp_name"),
                "created": datetime.fromtimestamp(found.creation_timestamp / 1000, tz=UTC),
                "run_id": found.run_id,
                "last_decision": tags.get("promote.outcome"),
            }
        )
    return sorted(rows, key=lambda row: int(row["version"]), reverse=True)
