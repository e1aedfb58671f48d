"""segflow.inference.graph: the GloRe unit's shapes at odd sizes, identity at initialisation,
gradients, where the units go, the checkpoint, the model card, and the ONNX export."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
import yaml

from segflow.config import ModelParams, load_params
from segflow.data.plan import plan_scale
from segflow.errors import ConfigError
from segflow.export.export import FP32_FILE, INT8_FILE, export_model
from segflow.inference.graph import GRAPH_KINDS, GloRe, GraphOptions
from segflow.inference.network import build_model, load_checkpoint, save_checkpoint
from segflow.registry.model_card import render_model_card
from segflow.registry.pyfunc import SegmentationModel
from segflow.runtime.onnx_file import session
from segflow.training.model import checkpoint_meta, model_from_params

#: A plan of 64 px images: long side 64, 64 x 64 crops and tiles.
PLAN_64 = plan_scale([(64, 64)], {}, [], 64, 12.0, 512)

ENCODER_ONLY = GraphOptions("glore", nodes=8, channels=16)
WITH_DECODER = GraphOptions("glore", nodes=8, channels=16, decoder=True)


def units(model: torch.nn.Module) -> list[GloRe]:
    return [module for module in model.modules() if isinstance(module, GloRe)]


def images(count: int, height: int, width: int, seed: int) -> torch.Tensor:
    """(count, 3, height, width) float RGB 0..255, the top half darker (some structure)."""
    array = np.random.default_rng(seed).integers(0, 255, (count, height, width, 3), dtype=np.uint8)
    array[:, : height // 2] //= 3
    return torch.from_numpy(array.transpose(0, 3, 1, 2)).float()


def test_shapes_at_odd_sizes_and_every_pixel_sees_every_other():
    torch.manual_seed(0)
    unit = GloRe(24, nodes=8, node_channels=12).eval()
    seen = {}
    for name in ("project", "adjacency", "update", "extend"):
        getattr(unit, name).register_forward_hook(
            lambda _m, inputs, output, name=name: seen.update({name: (inputs[0].shape, output.shape)})
        )
    x = torch.randn(2, 24, 37, 53)
    with torch.no_grad():
        assert torch.equal(unit(x), x)  # a new unit is the identity
        torch.nn.init.ones_(unit.norm.weight)
        y = unit(x)
    assert seen["project"][1] == (2, 8, 37, 53)  # B: a weight per node and pixel
    assert seen["adjacency"][0] == (2, 8, 12)  # V: node states (B, N, C')
    assert seen["update"][1] == (2, 12, 8)  # the state update, (B, C', N)
    assert seen["extend"][0] == (2, 12, 37, 53)  # Y = B^T V', back on the pixels
    assert y.shape == x.shape and not torch.equal(y, x)
    # Global: changing one corner pixel changes the output at the opposite corner.
    moved = x.clone()
    moved[:, :, 0, 0] += 5.0
    with torch.no_grad():
        far = unit(moved)[:, :, -1, -1] - y[:, :, -1, -1]
    assert far.abs().max() > 1e-4


def test_mixed_precision_pooling_stays_finite_on_a_full_resolution_stage():
    """float16 holds at most 65504: the pooled sum over 256 x 256 pixels must not be formed
    before it is averaged (CUDA training runs under autocast, train.amp)."""
    torch.manual_seed(0)
    unit = GloRe(16, nodes=32, node_channels=16).eval()
    torch.nn.init.ones_(unit.norm.weight)
    x = torch.relu(torch.randn(1, 16, 256, 256) * 10)
    with torch.no_grad():
        expected = unit(x)
        with torch.autocast("cpu", dtype=torch.float16):
            half = unit(x).float()
    assert torch.isfinite(half).all()
    assert (half - expected).abs().max() < 0.01 * expected.abs().max()


@pytest.mark.parametrize("graph", [ENCODER_ONLY, WITH_DECODER], ids=["encoder", "encoder and decoder"])
def test_new_units_leave_the_plain_networks_output_unchanged(graph):
    torch.manual_seed(0)
    plain = build_model("Unet", "resnet18", 3).eval()
    torch.manual_seed(0)  # the units are made after smp's layers: the same weights for those
    model = build_model("Unet", "resnet18", 3, graph=graph).eval()
    assert torch.equal(model.net.encoder.conv1.weight, plain.net.encoder.conv1.weight)
    assert len(units(model)) == (6 if graph.decoder else 1)  # Unet: 5 decoder stages
    x = images(2, 64, 96, seed=0)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-6)


def test_plain_state_dict_keys_are_smps_and_units_leave_the_encoder_alone():
    smp_keys = {f"net.{key}" for key in smp.create_model("Unet", "resnet18", encoder_weights=None).state_dict()}
    assert set(build_model("Unet", "resnet18", 3).state_dict()) == smp_keys | {"mean", "std"}
    glore_keys = set(build_model("Unet", "resnet18", 3, graph=WITH_DECODER).state_dict())
    assert {k for k in smp_keys if k.startswith("net.encoder.")} <= glore_keys


def test_gradients_reach_the_unit():
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", 3, graph=WITH_DECODER).train()
    x, target = images(2, 64, 64, seed=1), torch.randint(0, 3, (2, 64, 64))
    torch.nn.functional.cross_entropy(model(x), target).backward()
    for unit in units(model):
        # While its scale is zero only the last BatchNorm learns (the inner weights' output
        # is multiplied by zero); that scale gets a gradient, so it moves off zero.
        assert unit.norm.weight.grad.abs().sum() > 0
        assert unit.project.weight.grad.abs().sum() == 0
    model.zero_grad()
    for unit in units(model):
        torch.nn.init.constant_(unit.norm.weight, 0.5)
    torch.nn.functional.cross_entropy(model(x), target).backward()
    for unit in units(model):
        for layer in (unit.reduce, unit.project, unit.adjacency, unit.update, unit.extend):
            assert layer.weight.grad.abs().sum() > 0, layer


def test_decoder_units_need_decoder_stages():
    with pytest.raises(ConfigError, match=r"model.graph_decoder: architecture 'FPN' .* Unet, MAnet or Linknet"):
        build_model("FPN", "resnet18", 3, graph=WITH_DECODER)
    with pytest.raises(ConfigError, match=r"model.graph: unknown graph 'gcn'; choose from \['none', 'glore'\]"):
        build_model("Unet", "resnet18", 3, graph=GraphOptions("gcn", 8, 16))
    torch.manual_seed(0)
    plain = build_model("FPN", "resnet18", 3).eval()
    torch.manual_seed(0)
    model = build_model("FPN", "resnet18", 3, graph=ENCODER_ONLY).eval()  # the deepest feature: any arch
    x = images(1, 64, 64, seed=2)
    with torch.no_grad():
        assert torch.allclose(model(x), plain(x), atol=1e-6)


def test_params_choices_and_checks(raw_params, tmp_path):
    assert get_args(ModelParams.model_fields["graph"].annotation) == GRAPH_KINDS
    raw_params["model"].update(graph="none", graph_decoder=True)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw_params))
    with pytest.raises(ConfigError, match="graph_decoder: true adds GloRe units: set model.graph: glore"):
        load_params(path)


def test_checkpoint_pyfunc_and_model_card_carry_the_units(make_params, tmp_path):
    params = make_params(
        model={"encoder": "resnet18", "encoder_weights": None, "graph": "glore", "graph_decoder": True}
    )
    torch.manual_seed(0)
    model = model_from_params(params).eval()
    for unit in units(model):
        torch.nn.init.constant_(unit.norm.weight, 0.2)  # so the units change the output
    save_checkpoint(model, tmp_path / "model.pt", checkpoint_meta(params, PLAN_64))
    loaded, meta = load_checkpoint(tmp_path / "model.pt")
    assert meta.graph == GraphOptions("glore", nodes=32, channels=64, decoder=True)
    assert len(units(loaded)) == 6
    x = images(1, 64, 64, seed=3)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    image = images(1, 90, 150, seed=4)[0].permute(1, 2, 0).numpy().astype(np.uint8)
    served = SegmentationModel().attach(loaded, None, meta.tile).predict_masks([image])[0]
    assert np.array_equal(served, SegmentationModel().attach(model, None, (64, 64)).predict_masks([image])[0])
    card = render_model_card("m", "1", "run", params, {}, None, None, None, None)
    assert "GloRe graph-reasoning units (32 nodes, up to 64 channels each) on the deepest encoder feature and " in card
    assert "no graph-reasoning units" in render_model_card("m", "1", "run", make_params(), {}, *[None] * 4)


def test_checkpoints_from_before_graph_units_load_as_plain(make_params, tmp_path):
    params = make_params(model={"encoder": "resnet18", "encoder_weights": None})
    save_checkpoint(
        model_from_params(params),
        tmp_path / "model.pt",
        checkpoint_meta(params, PLAN_64),
    )
    old = torch.load(tmp_path / "model.pt", weights_only=True)
    del old["graph"]
    torch.save(old, tmp_path / "old.pt")
    loaded, meta = load_checkpoint(tmp_path / "old.pt")
    assert loaded.graph is None and meta.graph is None and not units(loaded)


def test_encoder_weights_load_into_a_network_with_units(make_params, tmp_path):
    source = build_model("Unet", "resnet18", 6)
    torch.save(source.net.encoder.state_dict(), tmp_path / "encoder.pt")
    model = model_from_params(
        make_params(model={"encoder": "resnet18", "encoder_weights": str(tmp_path / "encoder.pt"), "graph": "glore"})
    )
    assert units(model) and torch.equal(model.net.encoder.conv1.weight, source.net.encoder.conv1.weight)


# --- ONNX: a network with units everywhere, exported as segflow exports every model ---

SIZE = 64


@pytest.fixture(scope="module")
def net():
    """Units on the encoder and every decoder stage, their scales off zero (they matter:
    about a quarter of the mask differs from the plain network's) and BatchNorm statistics
    from the images it will see, as training would leave them."""
    torch.manual_seed(0)
    model = build_model("Unet", "resnet18", 3, graph=WITH_DECODER)
    generator = torch.Generator().manual_seed(1)
    for unit in units(model):
        unit.norm.weight.data.uniform_(0.1, 0.3, generator=generator)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the passes below
    with torch.no_grad():
        model.train()
        model(images(6, SIZE, SIZE, seed=0))
        model(images(2, 96, 160, seed=7))
    return model.eval()


@pytest.fixture(scope="module")
def exported(net, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    split = images(6, SIZE, SIZE, seed=0)
    with torch.inference_mode():
        truth = net(split).argmax(1).numpy().astype(np.uint8)
    truth[:, 56:] = 255
    pictures = split.numpy().transpose(0, 2, 3, 1).astype(np.uint8)
    calibration = images(4, SIZE, SIZE, seed=1).numpy().transpose(0, 2, 3, 1).astype(np.uint8)
    metadata = {"class_names": ["a", "b", "c"], "long_side": None, "tile": [SIZE, SIZE], "ignore_index": 255}
    report = export_model(net, metadata, out, zip(pictures, truth), calibration, max_int8_miou_loss=1.0)
    return out, report


@pytest.mark.parametrize("shape", [(1, 64, 64), (2, 96, 160)], ids=["traced size", "other batch, odd 3x5 deepest"])
def test_onnx_fp32_matches_pytorch(net, exported, shape):
    x = images(*shape, seed=2)
    logits, mask = session(exported[0] / FP32_FILE).run(["logits", "mask"], {"image": x.numpy()})
    with torch.inference_mode():
        expected = net(x).numpy()
    assert logits.shape == expected.shape and mask.shape == (shape[0], *shape[1:])
    assert np.abs(logits - expected).max() < 1e-3 * max(1.0, np.abs(expected).max())
    assert (mask == expected.argmax(1)).mean() > 0.999


def test_onnx_int8_runs_and_its_loss_is_measured(net, exported):
    out, report = exported
    assert report["miou"]["torch"] == pytest.approx(1.0) and report["miou"]["fp32"] > 0.999
    assert report["int8_miou_loss"] == pytest.approx(1.0 - report["miou"]["int8"])
    # A random network has flat logits, so int8 flips more pixels than a trained one would;
    # the plain random network of the same seed flips about 8% (tests/export/test_export.py's setup).
    assert report["agreement"]["int8"]["mean_disagreement"] < 0.15
    assert report["bytes"]["int8"] < 0.35 * report["bytes"]["fp32"]
    x = images(2, 96, 160, seed=2)
    mask = session(out / INT8_FILE).run(["mask"], {"image": x.numpy()})[0]
    with torch.inference_mode():
        expected = net(x).argmax(1).numpy()
    assert mask.shape == (2, 96, 160) and (mask == expected).mean() > 0.7
