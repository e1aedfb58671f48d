"""The resume file: the whole training state after every epoch, outside the stage's outputs.

DVC deletes a stage's outputs before it reruns it, so the file lives beside them. It is
used only by a run with the same training params and the same data (`resume_key`), and it
is replaced atomically, so an interruption never leaves half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from segflow.config import Params

__all__ = ["resume_key", "save_resume", "load_resume"]

log = logging.getLogger(__name__)


def resume_key(params: Params, split_hash: str) -> str:
    """What a resume file must match: every param that shapes training, and the data.

    ``train.processes`` is left out: the data order does not depend on it, so a run may
    resume on another number of processes; so is ``train.fold_model``, which only picks
    the model registered from the folds.
    """
    relevant = params.model_dump(mode="json", include={"seed", "classes", "preprocess", "model", "augment", "train"})
    for key in ("resume", "processes", "fold_model"):
        relevant["train"].pop(key)
    blob = json.dumps({"params": relevant, "split": split_hash}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def save_resume(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save(payload, partial)
    os.replace(partial, path)  # never leaves a half-written resume file


def load_resume(path: Path, key: str, enabled: bool) -> dict | None:
    if not enabled or not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("key") != key:
        log.info("ignoring %s: it belongs to other params or data", path)
        return None
    return payload
