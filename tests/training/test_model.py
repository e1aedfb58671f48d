import pytest
import torch

from segflow.data.plan import plan_scale
from segflow.errors import ConfigError
from segflow.inference.network import build_model, load_checkpoint, save_checkpoint
from segflow.training.model import checkpoint_meta, model_from_params

#: A plan of 64 px images: long side 64, 64 x 64 crops and tiles.
PLAN_64 = plan_scale([(64, 64)], {}, [], 64, 12.0, 512)


def test_output_shape_and_normalisation_inside_the_model():
    model = build_model("Unet", "resnet18", 3).eval()
    x = torch.full((2, 3, 64, 64), 255.0)
    assert model(x).shape == (2, 3, 64, 64)
    # the buffers hold ImageNet statistics in 0..255 units
    assert model.mean.flatten().tolist() == pytest.approx([123.675, 116.28, 103.53])


def test_unknown_encoder_and_arch_list_the_choices():
    with pytest.raises(ConfigError, match=r"unknown encoder 'resnt18'; choose from \[.*'resnet18'"):
        build_model("Unet", "resnt18", 3)
    with pytest.raises(ConfigError, match=r"unknown architecture 'UNet3'.*'unet'"):
        build_model("UNet3", "resnet18", 3)


def test_encoder_weights_file_initialises_the_encoder(make_params, tmp_path):
    source = build_model("Unet", "resnet18", 6)
    torch.save(source.net.encoder.state_dict(), tmp_path / "encoder.pt")
    model = model_from_params(
        make_params(model={"encoder": "resnet18", "encoder_weights": str(tmp_path / "encoder.pt")})
    )
    assert torch.equal(model.net.encoder.conv1.weight, source.net.encoder.conv1.weight)
    assert torch.equal(model.net.encoder.layer4[1].bn2.running_var, source.net.encoder.layer4[1].bn2.running_var)


def test_wrong_encoder_weights_fail_clearly(make_params, tmp_path):
    other = build_model("Unet", "resnet34", 6)
    torch.save(other.net.encoder.state_dict(), tmp_path / "resnet34.pt")
    with pytest.raises(ConfigError, match=r"does not fit encoder.*unexpected keys \['layer1.2"):
        model_from_params(make_params(model={"encoder": "resnet18", "encoder_weights": str(tmp_path / "resnet34.pt")}))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot load .*junk.pt"):
        model_from_params(make_params(model={"encoder": "resnet18", "encoder_weights": str(tmp_path / "junk.pt")}))


def test_checkpoint_round_trip(make_params, tmp_path):
    params = make_params()
    model = model_from_params(params)
    save_checkpoint(model, tmp_path / "model.pt", checkpoint_meta(params, PLAN_64, epoch=3))
    loaded, meta = load_checkpoint(tmp_path / "model.pt")
    assert meta.epoch == 3 and list(meta.class_names) == params.classes.names
    assert torch.equal(loaded.net.decoder.blocks[0].conv1[0].weight, model.net.decoder.blocks[0].conv1[0].weight)
