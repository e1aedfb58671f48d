"""ONNX export of a trained network, fp32 and int8, verified against PyTorch.

`export_model` writes three files into a folder:

* ``model.onnx``: the network in float32; dynamic batch, height and width (multiples of 32);
* ``model.int8.onnx``: weights (per channel) and activations quantized to 8 bits, static
  QDQ quantization whose activation ranges are calibrated on training images; onnxruntime
  runs it with integer kernels, which is what makes it smaller *and* faster on a CPU
  (dynamic quantization keeps float activations and runs convolutions slower than fp32);
* ``export.json``: the verification on the frozen test split: the share of labelled mask
  pixels each ONNX model predicts differently from PyTorch (mean, and the worst image),
  the largest logit difference, and the test mIoU of all three, hence the int8 loss. The
  int8 model is the ``default`` only if it loses at most ``serve.max_int8_miou_loss``.

The graph takes what `SegmentationNet` takes, ``image`` (N, 3, H, W) float32 RGB 0..255
(normalisation is inside), and gives ``logits`` (N, C, H, W) and ``mask`` (N, H, W) uint8,
the argmax, computed by onnxruntime so a server fetches one byte per pixel. The file's
metadata (key ``segflow``, JSON) holds the class names, palette, input size, source version
and its measured test mIoU, so an ONNX file alone is enough to serve.

`export_version` does this for a registered version (default ``@champion``) and logs the
folder to the version's run under ``onnx/v<version>/``; the version's tags ``onnx.fp32``,
``onnx.int8`` and ``onnx.default`` point at the files, which is where `segflow serve` finds
them.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path

import mlflow
import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import nn

from segflow.colours import palette
from segflow.config import Params
from segflow.errors import SegflowError
from segflow.inference.network import SegmentationNet, load_checkpoint
from segflow.inference.segment import Runner, batched, nchw, onnx_runner, torch_runner
from segflow.metrics import SegmentationMeter
from segflow.registry import versions
from segflow.registry.scoring import load_test_split

__all__ = [
    "FP32_FILE",
    "INT8_FILE",
    "REPORT_FILE",
    "METADATA_KEY",
    "VARIANT_FILES",
    "export_onnx",
    "quantize_int8",
    "read_metadata",
    "write_metadata",
    "session",
    "export_model",
    "calibration_images",
    "export_version",
]

log = logging.getLogger(__name__)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
REPORT_FILE = "export.json"
#: Variant name -> file name, as in the report and the version's ``onnx.<variant>`` tags.
VARIANT_FILES = {"fp32": FP32_FILE, "int8": INT8_FILE}
#: ONNX metadata_props key holding segflow's JSON metadata.
METADATA_KEY = "segflow"
#: ONNX opset: 18 is the first the dynamo exporter targets fully, and onnxruntime 1.18+ runs it.
OPSET = 18


class _WithMask(nn.Module):
    """The network plus its argmax, so the served graph also returns the uint8 mask."""

    def __init__(self, net: SegmentationNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return logits, logits.argmax(1).to(torch.uint8)


def export_onnx(model: SegmentationNet, path: Path, image_size: int, dynamo: bool = True) -> Path:
    """Export `model` (eval mode, CPU) to `path` as one self-contained float32 ONNX file.

    `dynamo` False uses the TorchScript exporter, deprecated in PyTorch but 5-10x faster
    (seconds instead of tens of seconds for a timm encoder); tests of the code around the
    export use it.
    """
    example = torch.rand(2, 3, image_size, image_size) * 255  # batch 2: a batch of 1 gets specialised
    names = {"input_names": ["image"], "output_names": ["logits", "mask"]}
    if dynamo:
        dynamic = torch.export.Dim.DYNAMIC
        shapes = {"dynamic_shapes": {"x": {0: dynamic, 2: dynamic, 3: dynamic}}, "external_data": False}
    else:
        axes = {
            "image": {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height", 3: "width"},
            "mask": {0: "batch", 1: "height", 2: "width"},
        }
        shapes = {"dynamic_axes": axes}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' notes on their own internals
        torch.onnx.export(
            _WithMask(model.eval().cpu()),
            (example,),
            str(path),
            dynamo=dynamo,
            opset_version=OPSET,
            verbose=False,
            **names,
            **shapes,
        )
    return Path(path)


class _Calibration(CalibrationDataReader):
    """Feeds calibration images (N, S, S, 3) uint8 one at a time to the quantizer."""

    def __init__(self, images: np.ndarray) -> None:
        self.batches = iter([{"image": nchw(images[i : i + 1])} for i in range(len(images))])

    def get_next(self) -> dict | None:
        return next(self.batches, None)


class _PerTensorNote(logging.Filter):
    """Drops onnxruntime's note that a 1-D weight (the few BatchNorms the optimiser cannot
    fold into a convolution, after TF-style SAME padding) gets one scale instead of one per
    channel: expected, harmless (the int8 loss is measured), and not the user's to fix."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


def quantize_int8(fp32_path: Path, path: Path, calibration: np.ndarray) -> Path:
    """Quantize `fp32_path` to int8 at `path`; `calibration` (N, S, S, 3) uint8 RGB images."""
    note, root = _PerTensorNote(), logging.getLogger()  # onnxruntime logs the note on the root logger
    with tempfile.TemporaryDirectory(prefix="segflow-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Folds constants and infers shapes, as onnxruntime recommends before quantizing.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        root.addFilter(note)
        try:
            quantize_static(
                str(prepared),
                str(path),
                _Calibration(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
            )
        finally:
            root.removeFilter(note)
    return Path(path)


def write_metadata(path: Path, metadata: dict) -> None:
    """Store `metadata` (JSON-ready) in the ONNX file's metadata_props."""
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


def _predict(run: Runner, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks (N, S, S) uint8 and logits (N, C, S, S) of `images` (N, S, S, 3) uint8."""
    logits = np.concatenate(list(batched(run, images)))
    return logits.argmax(1).astype(np.uint8), logits


def _miou(masks: np.ndarray, truth: np.ndarray, num_classes: int, ignore_index: int) -> float:
    meter = SegmentationMeter(num_classes, ignore_index)
    meter.update(torch.from_numpy(masks), torch.from_numpy(np.array(truth)))
    return float(meter.compute()["miou"])


def _agreement(
    masks: np.ndarray, logits: np.ndarray, ref_masks: np.ndarray, ref_logits: np.ndarray, labelled: np.ndarray
) -> dict:
    """How far a variant's masks are from PyTorch's, over labelled pixels (padding left out)."""
    differ = (masks != ref_masks) & labelled
    per_image = differ.sum((1, 2)) / np.maximum(labelled.sum((1, 2)), 1)
    return {
        "mean_disagreement": float(differ.sum() / max(int(labelled.sum()), 1)),
        "max_image_disagreement": float(per_image.max()),
        "max_logit_difference": float(np.abs(logits - ref_logits).max()),
    }


@torch.inference_mode()
def export_model(
    model: SegmentationNet,
    metadata: dict,
    out_dir: Path,
    test_images: np.ndarray,
    test_masks: np.ndarray,
    calibration: np.ndarray,
    max_int8_miou_loss: float,
) -> dict:
    """Export, quantize and verify `model`; returns the report written to ``export.json``.

    Args:
        metadata: at least class_names, image_size and ignore_index (stored in each file).
        test_images, test_masks: the frozen test split, (N, S, S, 3) uint8 and (N, S, S).
        calibration: training images (M, S, S, 3) uint8 for the int8 activation ranges.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, ignore, size = metadata["class_names"], metadata["ignore_index"], metadata["image_size"]
    files = {"fp32": out_dir / FP32_FILE, "int8": out_dir / INT8_FILE}
    export_onnx(model, files["fp32"], size)
    quantize_int8(files["fp32"], files["int8"], calibration)

    images = np.asarray(test_images)
    labelled = np.asarray(test_masks) != ignore
    ref_masks, ref_logits = _predict(torch_runner(model), images)
    report: dict = {
        "model": {
            key: metadata.get(key) for key in ("name", "version", "arch", "encoder", "image_size", "class_names")
        },
        "test_images": len(images),
        "miou": {"torch": _miou(ref_masks, test_masks, len(names), ignore)},
        "bytes": {},
        "agreement": {},
    }
    for variant, path in files.items():
        runner = session(path)
        masks, logits = _predict(onnx_runner(runner, "logits"), images)
        report["miou"][variant] = _miou(masks, test_masks, len(names), ignore)
        report["agreement"][variant] = _agreement(masks, logits, ref_masks, ref_logits, labelled)
    loss = report["miou"]["torch"] - report["miou"]["int8"]
    report["int8_miou_loss"] = loss
    report["default"] = "int8" if loss <= max_int8_miou_loss else "fp32"
    report["rule"] = f"int8 is served if it loses at most {max_int8_miou_loss} test mIoU against PyTorch fp32"
    for variant, path in files.items():
        write_metadata(path, {**metadata, "variant": variant, "test_miou": report["miou"][variant]})
        report["bytes"][variant] = path.stat().st_size
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=1))
    log.info(
        "exported %s: fp32 %.1f MB, int8 %.1f MB; test mIoU torch %.4f fp32 %.4f int8 %.4f; default %s",
        out_dir,
        report["bytes"]["fp32"] / 1e6,
        report["bytes"]["int8"] / 1e6,
        report["miou"]["torch"],
        report["miou"]["fp32"],
        report["miou"]["int8"],
        report["default"],
    )
    return report


def calibration_images(preprocess_dir: Path, count: int, seed: int) -> np.ndarray:
    """`count` training images (seeded choice), (count, S, S, 3) uint8: the int8 calibration."""
    train = np.load(Path(preprocess_dir) / "train_images.npy", mmap_mode="r")
    picked = np.sort(np.random.default_rng(seed).choice(len(train), min(count, len(train)), replace=False))
    return np.asarray(train[picked])


def export_version(params: Params, preprocess_dir: Path, ref: str | None = None) -> dict:
    """Export a registered version (`ref`: number or alias, default ``champion``) and log it.

    The files go to the version's run under ``onnx/v<version>/``; the version is tagged
    ``onnx.fp32``, ``onnx.int8`` (their runs:/ URIs), ``onnx.default`` and the verification
    figures. Returns the report (see `export_model`).
    """
    client = mlflow.MlflowClient()
    version = versions.resolve(client, params.mlflow.model_name, ref)
    if not version.run_id:
        raise SegflowError(f"version {version.version} of {version.name!r} has no run to log the ONNX files to")
    split = load_test_split(preprocess_dir)
    calibration = calibration_images(preprocess_dir, params.serve.calibration_images, params.seed)
    with tempfile.TemporaryDirectory(prefix="segflow-export-") as tmp:
        checkpoint, info = versions.download_checkpoint(version, Path(tmp) / "model")
        model, meta = load_checkpoint(checkpoint)
        names = meta["class_names"]
        metadata = {
            "name": version.name,
            "version": str(version.version),
            "arch": meta["arch"],
            "encoder": meta["encoder"],
            "class_names": names,
            "image_size": meta["image_size"],
            "ignore_index": info.get("ignore_index", params.classes.ignore_index),
            "palette": info.get("palette") or palette(len(names), params.classes.palette).tolist(),
        }
        out = Path(tmp) / "onnx"
        report = export_model(
            model, metadata, out, split.images, split.masks, calibration, params.serve.max_int8_miou_loss
        )
        report["test_split_sha256"] = split.sha256
        report["bytes"]["checkpoint"] = checkpoint.stat().st_size
        (out / REPORT_FILE).write_text(json.dumps(report, indent=1))
        folder = f"onnx/v{version.version}"
        client.log_artifacts(version.run_id, str(out), folder)
    tags = {
        versions.ONNX_TAG.format(variant): f"runs:/{version.run_id}/{folder}/{file}"
        for variant, file in VARIANT_FILES.items()
    }
    tags.update(
        {
            versions.DEFAULT_TAG: report["default"],
            "onnx.int8_miou_loss": f"{report['int8_miou_loss']:.5f}",
            "onnx.max_image_disagreement": json.dumps(
                {variant: round(a["max_image_disagreement"], 6) for variant, a in report["agreement"].items()}
            ),
            "onnx.report": f"runs:/{version.run_id}/{folder}/{REPORT_FILE}",
        }
    )
    for key, value in tags.items():
        client.set_model_version_tag(version.name, version.version, key, value)
    return {**report, "version": str(version.version), "artifacts": f"runs:/{version.run_id}/{folder}"}
