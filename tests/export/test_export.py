"""segflow.export.export: a real SegmentationNet exported with each exporter, checked
against PyTorch (logits, masks, at sizes and batches it was not traced with), quantized,
verified on a split, and served with the same masks as the registered pyfunc."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from segflow.errors import SegflowError
from segflow.export.export import EXPORTERS, FP32_FILE, INT8_FILE, REPORT_FILE, export_model, export_onnx
from segflow.inference.network import build_model
from segflow.registry.pyfunc import SegmentationModel
from segflow.runtime.onnx_file import read_metadata, session
from segflow.runtime.predictor import onnx_predictor

CLASSES = ["background", "sky", "thing"]
SIZE = 64


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("Unet", "resnet18", len(CLASSES)).eval()


@pytest.fixture(scope="module")
def split(net):
    """Six images whose truth is PyTorch's own prediction (so its mIoU is 1), bottom rows padding."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (6, SIZE, SIZE, 3), dtype=np.uint8)
    images[:, :32] //= 3  # some structure, so the classes differ across the image
    with torch.inference_mode():
        truth = net(torch.from_numpy(images.transpose(0, 3, 1, 2)).float()).argmax(1).numpy().astype(np.uint8)
    truth[:, 56:] = 255
    return images, truth


@pytest.fixture(scope="module", params=EXPORTERS)
def exported(net, split, tmp_path_factory, request):
    out = tmp_path_factory.mktemp(f"export-{request.param}")
    calibration = np.random.default_rng(1).integers(0, 255, (4, SIZE, SIZE, 3), dtype=np.uint8)
    metadata = {
        "name": "tiny",
        "version": "3",
        "class_names": CLASSES,
        "long_side": None,
        "tile": [SIZE, SIZE],
        "ignore_index": 255,
        "palette": [[0, 0, 0], [0, 0, 255], [255, 0, 0]],
    }
    report = export_model(net, metadata, out, zip(*split), calibration, 1.0, request.param)
    assert report["exporter"] == request.param
    return out, report


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 96, 160)], ids=["traced size", "other batch and size"])
def test_onnx_fp32_matches_pytorch(net, exported, shape):
    runner = session(exported[0] / FP32_FILE)
    x = torch.from_numpy(np.random.default_rng(2).uniform(0, 255, shape).astype(np.float32))
    logits, mask = runner.run(["logits", "mask"], {"image": x.numpy()})
    with torch.inference_mode():
        expected = net(x).numpy()
    assert logits.shape == expected.shape and mask.shape == (shape[0], *shape[2:]) and mask.dtype == np.uint8
    assert np.abs(logits - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())
    assert (mask == expected.argmax(1)).mean() > 0.999


def test_report_states_agreement_sizes_and_miou(exported):
    out, report = exported
    assert report == json.loads((out / REPORT_FILE).read_text())
    assert report["test_images"] == 6
    assert report["miou"]["torch"] == pytest.approx(1.0)
    assert report["miou"]["fp32"] > 0.999
    assert report["agreement"]["fp32"]["max_image_disagreement"] < 0.001
    assert report["agreement"]["fp32"]["max_logit_difference"] < 1e-2
    assert report["int8_miou_loss"] == pytest.approx(1.0 - report["miou"]["int8"])
    assert report["default"] == "int8"  # max_int8_miou_loss=1.0 lets any int8 model through
    # Weights in 8 bits: about a quarter of the float file.
    assert report["bytes"]["int8"] < 0.35 * report["bytes"]["fp32"]
    assert report["bytes"]["fp32"] == (out / FP32_FILE).stat().st_size


def test_files_carry_their_own_metadata(exported):
    out, report = exported
    for variant, file in (("fp32", FP32_FILE), ("int8", INT8_FILE)):
        meta = read_metadata(out / file)
        assert meta["variant"] == variant and meta["class_names"] == CLASSES and meta["tile"] == [SIZE, SIZE]
        assert meta["test_miou"] == pytest.approx(report["miou"][variant])


def test_int8_runs_at_any_size(exported):
    mask = session(exported[0] / INT8_FILE).run(["mask"], {"image": np.zeros((1, 3, 96, 128), np.float32)})[0]
    assert mask.shape == (1, 96, 128) and mask.max() < len(CLASSES)


def test_served_onnx_gives_the_registered_pyfuncs_masks(net, exported):
    """The same inference path (tiles of 64 px on a 90 x 150 image): the service and the
    registered model agree."""
    image = np.random.default_rng(3).integers(0, 255, (90, 150, 3), dtype=np.uint8)
    served = onnx_predictor(exported[0] / FP32_FILE, {}).predict(image)
    registered = SegmentationModel().attach(net, None, (SIZE, SIZE)).predict_masks([image])[0]
    assert served.shape == (90, 150)
    assert (served == registered).mean() > 0.999


def test_export_leaves_the_network_in_eval_mode(net, tmp_path):
    """The TorchScript exporter restores the exported module's mode afterwards: the network
    must not come back in training mode (BatchNorm on batch statistics)."""
    export_onnx(net, tmp_path / "model.onnx", (SIZE, SIZE), "torchscript")
    assert not any(module.training for module in net.modules())


def test_an_unknown_exporter_is_named():
    with pytest.raises(SegflowError, match="unknown ONNX exporter 'jit': use one of dynamo, torchscript"):
        export_onnx(None, "model.onnx", (SIZE, SIZE), "jit")


def test_the_command_offers_every_exporter(capsys):
    """`segflow export --exporter` lists its choices without importing torch: they are EXPORTERS."""
    from segflow.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["export", "--exporter", "jit"])
    assert exited.value.code == 2
    assert f"(choose from {', '.join(map(repr, EXPORTERS))})" in capsys.readouterr().err
