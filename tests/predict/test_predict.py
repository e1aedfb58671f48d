"""`segflow predict`: a folder of mixed photos -> masks at each photo's size, a corrupt file
reported and skipped, resumable runs, the least confident photo (noise) first, archives and
globs, pre-annotations, and the command line on an ONNX file and on @champion."""

from __future__ import annotations

import json
import resource
import tempfile
import zipfile

import numpy as np
import pytest
import torch
import yaml
from helpers import SERVE_CLASSES, SERVE_PALETTE, colour_rule_mask, png_bomb, scene, zip_bomb
from PIL import Image

from segflow.cli import main
from segflow.config import FetchParams, PredictParams
from segflow.errors import SourceError
from segflow.inference.segment import confidence, torch_runner
from segflow.predict.batch import predict_source
from segflow.predict.inputs import open_source
from segflow.predict.segment import DONE_BEFORE, FAILED, PREDICTED
from segflow.runtime.predictor import ModelInfo, Predictor

#: Stored (height, width) of each readable photo of `photos`.
SIZES = {
    "a_scene.jpg": (48, 64),
    "b_scene.png": (40, 70),
    "c_rgba.png": (30, 50),
    "d_gray.png": (33, 47),
    "e_rotated.jpg": (40, 60),  # EXIF Orientation 6: shown 60 x 40, stored (and predicted) 40 x 60
    "f_noise.png": (64, 64),
    "sub/g_scene.png": (90, 130),  # larger than a tile: tiled
}


class SoftColourRule(torch.nn.Module):
    """The colour rule of conftest (sky where blue - red > 64, thing where red - blue > 64),
    with logits small enough that a pixel near a threshold is uncertain: photos of flat
    colours are nearly certain, noise is not."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        red, blue = x[:, 0:1], x[:, 2:3]
        return 0.05 * torch.cat([torch.full_like(red, 64.0), blue - red, red - blue], 1)


@pytest.fixture
def predictor() -> Predictor:
    info = ModelInfo("soft-colour-rule", "1", None, "torch", SERVE_CLASSES, SERVE_PALETTE, None, [64, 64], 0)
    return Predictor(torch_runner(SoftColourRule()), info)


@pytest.fixture
def photos(tmp_path):
    """JPEG, PNG, RGBA, grayscale, EXIF-rotated and noise photos, one in a sub-folder, a
    corrupt .jpg and a text file."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(scene(48, 64)).save(folder / "a_scene.jpg", quality=95)
    Image.fromarray(scene(40, 70)).save(folder / "b_scene.png")
    rgba = np.dstack([scene(30, 50), np.random.default_rng(1).integers(0, 256, (30, 50), dtype=np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "c_rgba.png")
    Image.fromarray(np.full((33, 47), 150, np.uint8), "L").save(folder / "d_gray.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    Image.fromarray(scene(40, 60)).save(folder / "e_rotated.jpg", quality=95, exif=exif)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "f_noise.png")
    Image.fromarray(scene(90, 130)).save(folder / "sub" / "g_scene.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a JPEG")
    (folder / "notes.txt").write_text("not a photo")
    return folder


def read_mask(path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png)


def test_masks_at_each_photos_size_and_the_corrupt_file_skipped(predictor, photos, tmp_path):
    out = tmp_path / "out"
    run = predict_source(predictor, photos, out, PredictParams(overlay=True), progress=False)
    by_name = {o.name: o for o in run.outcomes}
    assert set(by_name) == {*SIZES, "broken.jpg"}  # notes.txt is not a photo
    assert by_name["broken.jpg"].status == FAILED and "not a decodable image" in by_name["broken.jpg"].error
    assert run.outcomes[-1].name == "broken.jpg"  # failures listed last
    for name, size in SIZES.items():
        stem = name.rsplit(".", 1)[0]
        mask = read_mask(out / "masks" / f"{stem}.png")
        assert mask.shape == size, name
        assert Image.open(out / "overlays" / f"{stem}.jpg").size == size[::-1]
        record = json.loads((out / "records" / f"{stem}.json").read_text())
        assert (record["height"], record["width"]) == size and record["bytes"] == (photos / name).stat().st_size
        assert sum(c["pixels"] for c in record["classes"]) == size[0] * size[1]
    # Lossless photos: exactly the rule applied to the stored pixels (RGBA: alpha dropped).
    for name, height, width in (("b_scene", 40, 70), ("sub/g_scene", 90, 130), ("c_rgba", 30, 50)):
        assert np.array_equal(read_mask(out / "masks" / f"{name}.png"), colour_rule_mask(scene(height, width)))
    assert not read_mask(out / "masks" / "d_gray.png").any()  # gray: background everywhere
    # The EXIF-rotated photo is predicted on its stored grid, as rasterize and training read it.
    rotated = read_mask(out / "masks" / "e_rotated.png")
    assert (rotated[:10] == 1).mean() > 0.95  # the sky is along the stored top
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {PREDICTED: 7, FAILED: 1} and summary["rows"][-1]["error"]
    shares = (out / "shares.csv").read_text().splitlines()
    assert shares[0] == "name,background,sky,thing" and len(shares) == 1 + len(SIZES)


def test_the_least_confident_photo_first_is_the_noise(predictor, photos, tmp_path):
    run = predict_source(predictor, photos, tmp_path / "out", PredictParams(sort="uncertain"), progress=False)
    scored = [o for o in run.outcomes if o.record]
    assert scored[0].name == "f_noise.png"
    values = [o.record["confidence"] for o in scored]
    assert values == sorted(values)
    assert values[0] < values[1] - 0.05  # noise well below any photo of the scene
    rows = (tmp_path / "out" / "summary.csv").read_text().splitlines()
    assert rows[1].startswith("1,f_noise.png,predicted,")


def test_a_second_run_resumes_and_force_predicts_again(predictor, photos, tmp_path):
    out = tmp_path / "out"
    predict_source(predictor, photos, out, PredictParams(), progress=False)
    mask = out / "masks" / "b_scene.png"
    before = mask.stat().st_mtime_ns
    (out / "records" / "c_rgba.json").unlink()  # as if interrupted before its record
    again = predict_source(predictor, photos, out, PredictParams(), progress=False)
    statuses = {o.name: o.status for o in again.outcomes}
    assert statuses["c_rgba.png"] == PREDICTED and statuses["broken.jpg"] == FAILED
    assert sum(status == DONE_BEFORE for status in statuses.values()) == len(SIZES) - 1
    assert mask.stat().st_mtime_ns == before
    forced = predict_source(predictor, photos, out, PredictParams(), force=True, progress=False)
    assert sum(o.status == PREDICTED for o in forced.outcomes) == len(SIZES)


def test_archives_globs_and_single_files_name_photos_alike(photos, tmp_path):
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(photos.rglob("*")):
            if path.is_file():
                bundle.write(path, f"photos/{path.relative_to(photos).as_posix()}")
    with open_source(photos) as listed, open_source(archive) as unpacked:
        assert [p.name for p in unpacked] == [p.name for p in listed]
        assert [p.path.read_bytes() for p in unpacked] == [p.path.read_bytes() for p in listed]
    with open_source(f"{photos}/**/*.png") as globbed:
        pngs = ["b_scene.png", "c_rgba.png", "d_gray.png", "f_noise.png", "sub/g_scene.png"]
        assert [p.name for p in globbed] == pngs
    with open_source(photos / "a_scene.jpg") as one:
        assert [p.name for p in one] == ["a_scene.jpg"]
    with pytest.raises(SourceError, match="no such folder"), open_source(tmp_path / "nowhere"):
        pass
    with pytest.raises(SourceError, match="no images in it"), open_source(photos / "sub" / "*.txt"):
        pass


def test_export_writes_the_tools_file_with_every_photo(predictor, photos, tmp_path):
    out = tmp_path / "out"
    options = PredictParams(export="coco", min_area=4)
    predict_source(predictor, photos, out, options, label_map={"heaven": "sky"}, unlabeled="background")
    coco = json.loads((out / "export" / "instances.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["background", "heaven", "thing"]
    assert {image["file_name"] for image in coco["images"]} == set(SIZES)
    heaven = next(c["id"] for c in coco["categories"] if c["name"] == "heaven")
    b_scene = next(image["id"] for image in coco["images"] if image["file_name"] == "b_scene.png")
    assert any(a["category_id"] == heaven and a["image_id"] == b_scene for a in coco["annotations"])


def test_confidence_is_the_mean_largest_probability():
    certain = np.zeros((3, 4, 5), np.float32)
    certain[1] = 50.0
    assert confidence(certain) == pytest.approx(1.0)
    assert confidence(np.zeros((2, 4, 5), np.float32)) == pytest.approx(0.5)  # a coin toss everywhere
    half = np.zeros((2, 2, 2), np.float32)
    half[0, 0] = 50.0  # one row certain, one a toss
    assert confidence(half) == pytest.approx(0.75)


def test_stage_sources_must_be_named_folders_or_archives():
    assert PredictParams(sources={"batch2": "/srv/photos"}).sources == {"batch2": "/srv/photos"}
    with pytest.raises(ValueError, match="DVC does not expand"):
        PredictParams(sources={"batch2": "~/photos"})
    with pytest.raises(ValueError, match="glob is for `segflow predict` only"):
        PredictParams(sources={"batch2": "photos/*.jpg"})
    with pytest.raises(ValueError, match="becomes a stage name"):
        PredictParams(sources={"batch 2": "photos"})


def test_the_command_on_an_onnx_file_exports_for_via(
    colour_rule_onnx, photos, tmp_path, monkeypatch, capsys, wide_console
):
    monkeypatch.chdir(tmp_path)
    params = {"classes": {"names": SERVE_CLASSES}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["predict", str(photos), "--out", "out", "--onnx", str(colour_rule_onnx), "--export", "via"]
    with pytest.raises(SystemExit) as exited:
        main([*args, "--sort", "name"])
    assert exited.value.code == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "7 predicted" in printed and "1 failed" in printed and "broken.jpg" in printed
    via = json.loads((tmp_path / "out" / "export" / "via_region_data.json").read_text())
    assert {entry["filename"] for entry in via.values()} == set(SIZES)
    assert (tmp_path / "out" / "export" / "via_region_data.csv").is_file()
    with pytest.raises(SystemExit) as exited:
        main(args)  # again: every photo done before
    assert exited.value.code == 0 and "0 predicted" in " ".join(capsys.readouterr().out.split())


def test_the_command_uses_champion_by_default(
    register_version, registry_params, photos, tmp_path, capsys, wide_console
):
    register_version(1)  # sky everywhere; the first version is also @champion
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(registry_params.model_dump(mode="json")))
    with pytest.raises(SystemExit) as exited:
        main(["predict", str(photos), "--out", str(tmp_path / "out"), "--params", str(params_file)])
    assert exited.value.code == 0
    assert "tiny v1" in " ".join(capsys.readouterr().out.split())
    mask = read_mask(tmp_path / "out" / "masks" / "sub" / "g_scene.png")
    assert mask.shape == SIZES["sub/g_scene.png"] and (mask == 1).all()


def test_a_bomb_photo_fails_from_its_header_and_the_others_are_predicted(predictor, photos, tmp_path):
    png_bomb(photos / "bomb.png")  # 30000x30000: the run reached 4.5 GB in 24 s
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run = predict_source(predictor, photos, tmp_path / "out", PredictParams(), progress=False)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    by_name = {o.name: o for o in run.outcomes}
    assert by_name["bomb.png"].status == FAILED
    assert f"{photos / 'bomb.png'}: the image is 900,000,000 pixels" in by_name["bomb.png"].error
    assert "over the limit of 100,000,000 (fetch.max_pixels)" in by_name["bomb.png"].error
    assert sum(o.status == PREDICTED for o in run.outcomes) == len(SIZES)
    assert grown_mb < 300, grown_mb  # the decoded bomb alone would be 2,700 MB
    lowered = predict_source(
        predictor, photos, tmp_path / "low", PredictParams(), progress=False, fetch=FetchParams(max_pixels=5_000)
    )
    too_large = {o.name for o in lowered.outcomes if o.status == FAILED and "(fetch.max_pixels)" in o.error}
    assert too_large == {"bomb.png", "sub/g_scene.png"}  # 130 x 90 = 11,700 pixels


def test_an_archive_bomb_is_refused_naming_the_key_and_its_folder_removed(predictor, photos, tmp_path, monkeypatch):
    bomb = zip_bomb(tmp_path / "photos.zip", 100, beside=photos)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    limits = FetchParams(max_extract_bytes=20_000_000)
    with pytest.raises(
        SourceError,
        match=r"photos.zip: extracting it writes more than 20,000,000 bytes, the limit \(fetch.max_extract_bytes\)",
    ):
        predict_source(predictor, bomb, tmp_path / "out", PredictParams(), progress=False, fetch=limits)
    made = list((tmp_path / "tmp").iterdir())
    assert made == []  # the run's temporary folder, with the partial extraction, is gone
    with pytest.raises(SourceError, match=r"\(200x, fetch.max_compression_ratio\)"), open_source(bomb):
        pass
