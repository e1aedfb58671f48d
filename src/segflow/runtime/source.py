"""Where the served model comes from, and whether it has changed since it was loaded.

A source is one of:

* ``models:/<name>@<alias>``: the version an alias points at (``@champion`` by default);
  it moves when the alias does (`segflow promote`, `segflow rollback`);
* ``models:/<name>/<version>``: one version, which never changes;
* a ``.onnx`` file from `segflow export`, or a ``.pt`` checkpoint (`segflow.inference.network`); it
  changes when the file is replaced.

For a registered version, the exported ONNX model the version names (``onnx.default``)
is served when there is one, its PyTorch checkpoint otherwise (`serve.runtime` forces a
choice). `key()` is cheap (one registry call, or a stat) and says which model `load()`
would load now, which is how the service notices that @champion moved.
"""

from __future__ import annotations

import logging
import re
import tempfile
from pathlib import Path

import mlflow

from segflow.errors import SegflowError
from segflow.registry import versions
from segflow.runtime.predictor import Predictor, onnx_predictor, torch_predictor

__all__ = ["ModelSource"]

log = logging.getLogger(__name__)

_REGISTERED = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


class ModelSource:
    """A model to serve: a registered version (by alias or number) or a file.

    Args:
        spec: ``models:/<name>@<alias>``, ``models:/<name>/<version>``, or a path.
        runtime: auto | int8 | fp32 | torch (see `segflow.config.ServeParams.runtime`).
    """

    def __init__(self, spec: str | Path, runtime: str = "auto") -> None:
        self.spec, self.runtime = str(spec), runtime
        found = _REGISTERED.match(self.spec)
        self.name = found["name"] if found else None
        self.alias = found["alias"] if found else None
        self.version = found["version"] if found else None
        if found is None:
            path = Path(spec)
            if path.suffix not in (".onnx", ".pt", ".pth"):
                raise SegflowError(
                    f"model source {self.spec!r}: give models:/<name>@<alias>, "
                    "models:/<name>/<version>, an .onnx file or a .pt checkpoint"
                )
            if not path.is_file():
                raise SegflowError(
                    f"model file {path} not found: run `segflow export`, or give models:/<name>@champion"
                )
            if path.suffix == ".onnx" and runtime == "torch" or path.suffix != ".onnx" and runtime in ("int8", "fp32"):
                raise SegflowError(f"serve.runtime {runtime!r} cannot run {path}: use runtime auto")

    @property
    def moves(self) -> bool:
        """Whether what this source names can change (an alias, a file): worth polling."""
        return self.version is None

    def key(self) -> str:
        """Identifies the model `load()` would load now."""
        if self.name is None:
            stat = Path(self.spec).stat()
            return f"{stat.st_mtime_ns}:{stat.st_size}"
        if self.alias is None:
            return self.version
        return str(versions.resolve(mlflow.MlflowClient(), self.name, self.alias).version)

    def load(self) -> tuple[str, Predictor]:
        """(key, predictor) of the model this source names now."""
        if self.name is None:
            key, path = self.key(), Path(self.spec)
            info = {"source": str(path)}
            predictor = onnx_predictor(path, info) if path.suffix == ".onnx" else torch_predictor(path, info)
            return key, predictor
        return self._load_registered()

    def _load_registered(self) -> tuple[str, Predictor]:
        client = mlflow.MlflowClient()
        version = versions.resolve(client, self.name, self.alias or self.version)
        info = {
            "name": version.name,
            "version": str(version.version),
            "alias": self.alias,
            "source": f"models:/{version.name}/{version.version}",
        }
        exported = (
            None
            if self.runtime == "torch"
            else versions.onnx_uri(version, None if self.runtime == "auto" else self.runtime)
        )
        if exported is None and self.runtime in ("int8", "fp32"):
            raise SegflowError(
                f"version {version.version} of {version.name!r} has no exported {self.runtime} "
                f"model: run `segflow export --version {version.version}`, or serve runtime auto"
            )
        with tempfile.TemporaryDirectory(prefix="segflow-serve-") as tmp:
            if exported is not None:
                variant, uri = exported
                path = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
                loss = version.tags.get("onnx.int8_miou_loss")
                metrics = {"int8_miou_loss": float(loss)} if loss else {}
                predictor = onnx_predictor(path, {**info, "metrics": metrics})
            else:
                log.info(
                    "version %s of %s has no exported ONNX model: serving its PyTorch checkpoint "
                    "(`segflow export` makes it smaller and faster)",
                    version.version,
                    version.name,
                )
                checkpoint, meta = versions.download_checkpoint(version, Path(tmp))
                metrics = {"test_miou": versions.test_miou(version, meta)}
                predictor = torch_predictor(checkpoint, {**info, "palette": meta.get("palette"), "metrics": metrics})
        return str(version.version), predictor
