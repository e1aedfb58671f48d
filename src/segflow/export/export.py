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
metadata (`segflow.runtime.onnx_file`) holds the class names, palette, input size, source
version and its measured test mIoU, so an ONNX file alone is enough to serve.

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
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import torch
from torch import nn

from segflow.colours import palette
from segflow.config import Params
from segflow.errors import SegflowError
from segflow.export.quantize import calibration_images, quantize_int8
from segflow.inference.network import CheckpointMeta, SegmentationNet, load_checkpoint
from segflow.inference.segment import Segmenter, as_rgb, onnx_runner, torch_runner
from segflow.metrics import SegmentationMeter
from segflow.registry import versions
from segflow.registry.scoring import load_test_split
from segflow.runtime.onnx_file import session, write_metadata

__all__ = [
    "EXPORTERS",
    "FP32_FILE",
    "INT8_FILE",
    "REPORT_FILE",
    "VARIANT_FILES",
    "export_onnx",
    "export_model",
    "export_checkpoint",
    "export_version",
]

log = logging.getLogger(__name__)

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
REPORT_FILE = "export.json"
#: Variant name -> file name, as in the report and the version's ``onnx.<variant>`` tags.
VARIANT_FILES = {"fp32": FP32_FILE, "int8": INT8_FILE}
#: ONNX opset: 18 is the first the dynamo exporter targets fully, and onnxruntime 1.18+ runs it.
OPSET = 18
#: The torch.onnx exporters `export_onnx` can use; the first is the default.
EXPORTERS = ("dynamo", "torchscript")


class _WithMask(nn.Module):
    """The network plus its argmax, so the served graph also returns the uint8 mask."""

    def __init__(self, net: SegmentationNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.net(x)
        return logits, logits.argmax(1).to(torch.uint8)


def export_onnx(model: SegmentationNet, path: Path, tile: tuple[int, int], exporter: str = EXPORTERS[0]) -> Path:
    """Export `model` (eval mode, CPU) to `path` as one self-contained float32 ONNX file.

    `exporter` is one of `EXPORTERS`. ``dynamo`` (the default; torch.export) takes 160-220 s
    for the default EfficientNet-Lite0 U-Net on 2 cores; ``torchscript`` (tracing, deprecated
    in PyTorch) takes about 1 s and gives the same fp32 logits (within 2e-5), but its graph
    quantizes worse: on the sample's model the int8 file lost 6.3 points of test mIoU against
    0.03 for dynamo's (docs/benchmarks.md), so `export_model` would serve its fp32 file.
    Tests use it where the export is not what they check.
    """
    if exporter not in EXPORTERS:
        raise SegflowError(f"unknown ONNX exporter {exporter!r}: use one of {', '.join(EXPORTERS)}")
    example = torch.rand(2, 3, *tile) * 255  # batch 2: a batch of 1 gets specialised
    names = {"input_names": ["image"], "output_names": ["logits", "mask"]}
    dynamo = exporter == "dynamo"
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
    # eval() on the wrapper too: a new module is in training mode, which the TorchScript
    # exporter restores afterwards, on `model` as well.
    wrapped = _WithMask(model.eval().cpu()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' notes on their own internals
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            dynamo=dynamo,
            opset_version=OPSET,
            verbose=False,
            **names,
            **shapes,
        )
    return Path(path)


class _Variant:
    """One runtime's predictions over the test split, compared with PyTorch's as they come."""

    def __init__(self, segmenter: Segmenter, num_classes: int, ignore_index: int) -> None:
        self.segmenter = segmenter
        self.meter = SegmentationMeter(num_classes, ignore_index)
        self.differ, self.labelled, self.worst, self.logit_gap = 0, 0, 0.0, 0.0

    def add(self, image: np.ndarray, truth: np.ndarray, reference: tuple[np.ndarray, np.ndarray] | None) -> tuple:
        logits = self.segmenter.logits(self.segmenter.scaled(as_rgb(image)))
        mask = self.segmenter.to_mask(logits, *image.shape[:2])
        self.meter.update(torch.from_numpy(mask[None]), torch.from_numpy(truth[None]))
        if reference is not None:
            labelled = truth != self.meter.ignore_index
            differ = int(((mask != reference[0]) & labelled).sum())
            self.differ, self.labelled = self.differ + differ, self.labelled + int(labelled.sum())
            self.worst = max(self.worst, differ / max(int(labelled.sum()), 1))
            self.logit_gap = max(self.logit_gap, float(np.abs(logits - reference[1]).max()))
        return mask, logits

    def agreement(self) -> dict:
        """How far the masks are from PyTorch's, over labelled pixels (ignore left out)."""
        return {
            "mean_disagreement": self.differ / max(self.labelled, 1),
            "max_image_disagreement": self.worst,
            "max_logit_difference": self.logit_gap,
        }


def _log_report(out_dir: Path, report: dict) -> None:
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


@torch.inference_mode()
def export_model(
    model: SegmentationNet,
    metadata: dict,
    out_dir: Path,
    test: Iterable[tuple[np.ndarray, np.ndarray]],
    calibration: np.ndarray,
    max_int8_miou_loss: float,
    exporter: str = EXPORTERS[0],
) -> dict:
    """Export, quantize and verify `model`; returns the report written to ``export.json``.

    Args:
        metadata: at least class_names, long_side, tile and ignore_index (stored in each file).
        test: the frozen test split, (image (H, W, 3), mask (H, W)) uint8 at original sizes;
            every runtime predicts it through the one inference path.
        calibration: (M, th, tw, 3) uint8 tiles of training images for the int8 ranges.
        exporter: which torch.onnx exporter writes the fp32 file (`export_onnx`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names, ignore = metadata["class_names"], metadata["ignore_index"]
    long_side, tile = metadata["long_side"], tuple(metadata["tile"])
    files = {"fp32": out_dir / FP32_FILE, "int8": out_dir / INT8_FILE}
    export_onnx(model, files["fp32"], tile, exporter)
    quantize_int8(files["fp32"], files["int8"], calibration)
    variants = {"torch": _Variant(Segmenter(torch_runner(model), long_side, tile), len(names), ignore)}
    for variant, path in files.items():
        variants[variant] = _Variant(Segmenter(onnx_runner(session(path)), long_side, tile), len(names), ignore)
    count = 0
    for image, truth in test:
        reference = variants["torch"].add(image, truth, None)
        for variant in files:
            variants[variant].add(image, truth, reference)
        count += 1
    report: dict = {
        "model": {key: metadata.get(key) for key in ("name", "version", "arch", "encoder", "long_side", "tile")}
        | {"class_names": names},
        "exporter": exporter,
        "test_images": count,
        "resolution": "original",
        "miou": {variant: float(v.meter.compute()["miou"]) for variant, v in variants.items()},
        "bytes": {},
        "agreement": {variant: variants[variant].agreement() for variant in files},
    }
    loss = report["miou"]["torch"] - report["miou"]["int8"]
    report["int8_miou_loss"] = loss
    report["default"] = "int8" if loss <= max_int8_miou_loss else "fp32"
    report["rule"] = f"int8 is served if it loses at most {max_int8_miou_loss} test mIoU against PyTorch fp32"
    for variant, path in files.items():
        write_metadata(path, {**metadata, "variant": variant, "test_miou": report["miou"][variant]})
        report["bytes"][variant] = path.stat().st_size
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=1))
    _log_report(out_dir, report)
    return report


def export_checkpoint(
    model: SegmentationNet,
    meta: CheckpointMeta,
    params: Params,
    preprocess_dir: Path,
    out_dir: Path,
    exporter: str = EXPORTERS[0],
    **extra: object,
) -> dict:
    """`export_model` for a loaded checkpoint (`meta` from `load_checkpoint`), verified on the
    preprocess folder's frozen test split and calibrated on its training images; `extra`
    (name, version, palette, ignore_index) overrides the file metadata taken from params."""
    names = list(meta.class_names)
    metadata = {
        "arch": meta.arch,
        "encoder": meta.encoder,
        "graph": None if meta.graph is None else asdict(meta.graph),  # GloRe units, None = plain
        "class_names": names,
        "long_side": meta.long_side,
        "tile": list(meta.tile),
        "ignore_index": params.classes.ignore_index,
        "palette": palette(len(names), params.classes.colours(names)).tolist(),
        **{key: value for key, value in extra.items() if value is not None},
    }
    split = load_test_split(preprocess_dir)
    calibration = calibration_images(preprocess_dir, params.serve.calibration_images, params.seed)
    test = ((image, truth) for _, image, truth in split)  # one image at a time, original size
    report = export_model(model, metadata, out_dir, test, calibration, params.serve.max_int8_miou_loss, exporter)
    report["test_split_sha256"] = split.sha256
    return report


def export_version(params: Params, preprocess_dir: Path, ref: str | None = None, exporter: str = EXPORTERS[0]) -> dict:
    """Export a registered version (`ref`: number or alias, default ``champion``) with
    `exporter` (`export_onnx`) and log it.

    The files go to the version's run under ``onnx/v<version>/``; the version is tagged
    ``onnx.fp32``, ``onnx.int8`` (their runs:/ URIs), ``onnx.default`` and the verification
    figures. Returns the report (see `export_model`).
    """
    client = mlflow.MlflowClient()
    version = versions.resolve(client, params.mlflow.model_name, ref)
    if not version.run_id:
        raise SegflowError(f"version {version.version} of {version.name!r} has no run to log the ONNX files to")
    with tempfile.TemporaryDirectory(prefix="segflow-export-") as tmp:
        checkpoint, info = versions.download_checkpoint(version, Path(tmp) / "model")
        model, meta = load_checkpoint(checkpoint)
        out = Path(tmp) / "onnx"
        report = export_checkpoint(
            model,
            meta,
            params,
            preprocess_dir,
            out,
            exporter,
            name=version.name,
            version=str(version.version),
            ignore_index=info.get("ignore_index"),
            palette=info.get("palette") or None,
        )
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
