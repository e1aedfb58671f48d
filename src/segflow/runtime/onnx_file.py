"""An exported ONNX file as the runtime reads it: an onnxruntime session and the metadata
segflow stores in the file (key ``segflow``, JSON: class names, palette, working long side,
input tile, source version, measured test mIoU), so that the file alone is enough to serve.

`segflow.export.export` writes the files and their metadata (`write_metadata`); the runtime
only reads them (`session`, `read_metadata`).
"""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort

__all__ = ["METADATA_KEY", "read_metadata", "write_metadata", "session"]

#: ONNX metadata_props key holding segflow's JSON metadata.
METADATA_KEY = "segflow"


def write_metadata(path: Path, metadata: dict) -> None:
    """Store `metadata` (JSON-ready) in the ONNX file's metadata_props."""
    import onnx  # only the exporter and tests write metadata; serving needs onnxruntime alone

    proto = onnx.load(str(path))
    kept = [prop for prop in proto.metadata_props if prop.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    proto.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    onnx.save(proto, str(path))


def read_metadata(source: Path | ort.InferenceSession) -> dict:
    """segflow's metadata of an ONNX file (or loaded session); {} if it has none."""
    if not isinstance(source, ort.InferenceSession):
        source = session(source)
    raw = source.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session; `threads` 0 = one per physical core."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: the QDQ graph's notes are not warnings
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
