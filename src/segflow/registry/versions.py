"""Reading a registered version's files: its checkpoint, metadata and exported ONNX models.

Layout assumed (written by `segflow.registry.register.register_model` and `segflow.export.export`):

* the version's model (``models:/<name>/<version>``) is a `segflow.registry.pyfunc` model: its
  MLmodel names the checkpoint among the pyfunc artifacts (key `segflow.registry.pyfunc.CHECKPOINT`)
  and holds class_names, palette, image_size, ignore_index (and test_metrics if it was
  scored at registration) in its ``metadata``;
* after `segflow export`, the version's tags ``onnx.fp32`` / ``onnx.int8`` are ``runs:/``
  URIs of the ONNX files and ``onnx.default`` names the one to serve.

Only this module knows that layout; `segflow.export` and `segflow.runtime` go through it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import mlflow.pyfunc
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from segflow.errors import SegflowError
from segflow.registry import tracking
from segflow.registry.pyfunc import CHECKPOINT

__all__ = [
    "ONNX_TAG",
    "DEFAULT_TAG",
    "resolve",
    "import_path_kept",
    "load_pyfunc",
    "download_checkpoint",
    "onnx_uri",
    "test_miou",
]

#: Version tag holding the runs:/ URI of an exported variant: ONNX_TAG.format("int8").
ONNX_TAG = "onnx.{}"
#: Version tag naming the variant to serve ("int8" or "fp32").
DEFAULT_TAG = "onnx.default"
#: Error codes MLflow answers a missing model, version or alias with.
_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


@contextmanager
def import_path_kept() -> Iterator[None]:
    """``sys.path`` as it was when the block ends.

    MLflow puts a model's ``code_paths`` folder in front of ``sys.path`` for good when it
    loads the model (and when it logs one with an input example). That folder holds a
    partial copy of segflow (`segflow.registry.register.CODE`: no config, data or
    training), so a process started afterwards with this process's path (a
    ``multiprocessing`` spawn, a DataLoader worker, torch's ``mp.spawn``) imports that copy
    and fails on ``import segflow.config``. Modules already imported are kept.
    """
    path = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = path


def load_pyfunc(uri: str) -> mlflow.pyfunc.PyFuncModel:
    """``mlflow.pyfunc.load_model(uri)``, leaving ``sys.path`` as it was (`import_path_kept`)."""
    with import_path_kept():
        return mlflow.pyfunc.load_model(uri)


def resolve(client: mlflow.MlflowClient, name: str, ref: str | None = None) -> ModelVersion:
    """The version `ref` names: a number, or an alias (default ``champion``).

    Raises:
        SegflowError: no such model, version or alias (the message says what exists).
    """
    ref = ref or tracking.CHAMPION
    try:
        if ref.isdigit():
            return client.get_model_version(name, ref)
        return client.get_model_version_by_alias(name, ref)
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise  # a store that does not answer is not a missing version
        try:
            model = client.get_registered_model(name)
        except MlflowException:
            raise SegflowError(
                f"no registered model {name!r} in {mlflow.get_tracking_uri()}: run `dvc repro` to train one "
                "(or set MLFLOW_TRACKING_URI to the store that has it)"
            ) from None
        aliases = {alias: str(version) for alias, version in model.aliases.items()}
        what = f"version {ref}" if ref.isdigit() else f"alias @{ref}"
        fix = "`segflow promote` sets @champion; " if ref == tracking.CHAMPION else ""
        raise SegflowError(
            f"{name!r} has no {what} (its aliases: {aliases or 'none'}): {fix}or give a version number or "
            "another alias (`segflow models` lists them)"
        ) from None


def download_checkpoint(version: ModelVersion, dst: Path) -> tuple[Path, dict]:
    """Download `version`'s pyfunc model into `dst`; returns (checkpoint path, metadata)."""
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{version.name}/{version.version}", dst_path=str(dst))
    )
    model = Model.load(str(local / "MLmodel"))
    artifacts = model.flavors.get("python_function", {}).get("artifacts", {})
    if CHECKPOINT not in artifacts:
        raise SegflowError(
            f"version {version.version} of {version.name!r} is not a segflow pyfunc model (no "
            f"{CHECKPOINT!r} artifact in its MLmodel): register it with segflow's train stage"
        )
    return local / artifacts[CHECKPOINT]["path"], dict(model.metadata or {})


def onnx_uri(version: ModelVersion, variant: str | None = None) -> tuple[str, str] | None:
    """(variant, runs:/ URI) of `version`'s exported ONNX `variant` (None = its default),
    or None if it was not exported."""
    variant = variant or version.tags.get(DEFAULT_TAG)
    uri = version.tags.get(ONNX_TAG.format(variant)) if variant else None
    return (variant, uri) if uri else None


def test_miou(version: ModelVersion, metadata: dict) -> float | None:
    """The version's test mIoU as registered (tag or pyfunc metadata), None if unscored."""
    tag = version.tags.get("test_miou")
    if tag not in (None, "", "None"):
        return float(tag)
    return (metadata.get("test_metrics") or {}).get("miou")
