"""Registry: the registered pyfunc, the first champion, the model card, serving."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from helpers import SPLIT_PIXELS, child_import_error
from servers import free_port, start_server, stop_server, wait_for

from segflow.cli import main
from segflow.registry.champion import HISTORY_TAG
from segflow.registry.pyfunc import SegmentationModel, encode_png
from segflow.registry.register import MODEL_CARD, requirements
from segflow.registry.versions import load_pyfunc

LABELLED = sum(SPLIT_PIXELS.values())


def test_first_version_becomes_champion_without_comparison_and_says_so(register_version, frozen_split, tmp_path):
    records = tmp_path / "promotions"
    first = register_version(0, data_dir=frozen_split / "preprocess", record_dir=records)
    client = mlflow.MlflowClient()
    model = client.get_registered_model("tiny")
    assert {alias: str(v) for alias, v in model.aliases.items()} == {"candidate": first, "champion": first}
    assert json.loads(model.tags[HISTORY_TAG]) == [first]

    tags = client.get_model_version("tiny", first).tags
    assert tags["promote.outcome"] == "first champion"
    assert tags["promote.reasons"] == "first model: champion without comparison"
    assert tags["promote.previous_champion"] == "none"
    # Predicting background everywhere: IoU 64/1920 for it, 0 for the others, over 3 classes.
    assert float(tags["test_miou"]) == pytest.approx(SPLIT_PIXELS["background"] / LABELLED / 3, abs=1e-5)
    assert tags["data_md5"] == "md5-of-v0" and tags["git_commit"] == "c0ffee"
    [record_file] = records.glob("*-promote-v1.json")
    record = json.loads(record_file.read_text())
    assert record["outcome"] == "first champion" and record["champion_after"] == first
    # Crowned at registration; its scores come from the evaluate stage, in the tags.
    assert record["metrics"]["candidate"] is None
    run_id = client.get_model_version("tiny", first).run_id
    assert f"promotions/{record_file.name}" in {a.path for a in client.list_artifacts(run_id, "promotions")}

    # Only the first one: a later version is a candidate, the champion stays.
    second = register_version(1)
    model = client.get_registered_model("tiny")
    assert (str(model.aliases["candidate"]), str(model.aliases["champion"])) == (second, first)
    assert "promote.outcome" not in client.get_model_version("tiny", second).tags


def test_the_model_carries_classes_palette_inference_code_and_pinned_requirements(register_version, frozen_split):
    version = register_version(1, data_dir=frozen_split / "preprocess")
    info = mlflow.models.get_model_info(f"models:/tiny/{version}")
    meta = info.metadata
    assert meta["class_names"] == ["background", "sky", "thing"]
    assert len(meta["palette"]) == 3 and all(len(colour) == 3 for colour in meta["palette"])
    assert meta["long_side"] == 32 and meta["tile"] == [32, 32]
    # Scored once, by what the evaluate stage runs: the tags are the one record of it.
    tags = mlflow.MlflowClient().get_model_version("tiny", version).tags
    assert float(tags["test_miou"]) == pytest.approx(SPLIT_PIXELS["sky"] / LABELLED / 3, abs=1e-5)
    assert tags["test_images"] == "2" and "test_metrics" not in meta
    assert info.signature.inputs is None and info.signature.outputs is not None
    local = Path(mlflow.artifacts.download_artifacts(f"models:/tiny/{version}"))
    pinned = (local / "requirements.txt").read_text()
    assert all(requirement in pinned for requirement in requirements())
    assert any(line.startswith("torch==") for line in pinned.splitlines())
    # Only the inference closure travels with the model, without bytecode caches.
    code = local / "code" / "segflow"
    assert (code / "registry" / "pyfunc.py").is_file() and (code / "inference" / "segment.py").is_file()
    assert not (code / "data").exists() and not (code / "serving").exists() and not (code / "cli.py").exists()
    assert not list((local / "code").rglob("__pycache__"))


def test_model_card_has_data_params_metrics_confusion_and_weaknesses(register_version, frozen_split):
    version = register_version(1, data_dir=frozen_split / "preprocess")
    client = mlflow.MlflowClient()
    tags = client.get_model_version("tiny", version).tags
    card = mlflow.artifacts.load_text(tags["model_card"])
    assert tags["model_card"].endswith(MODEL_CARD)
    assert card.startswith(f"# tiny version {version}")
    assert "md5-of-v1" in card and "c0ffee" in card
    assert "| sky | 90.0% | 90.0% |" in card  # class shares, train and test
    assert "| `train.epochs` | `1` |" in card
    assert "| sky | 0.900 |" in card  # IoU of the only class it predicts
    assert "| **thing** | 0 | 100 | 0 |" in card  # every thing pixel predicted as sky
    weaknesses = card.split("## Known weaknesses")[1]
    assert "`background`: IoU 0.000; 100% of its pixels predicted as `sky`" in weaknesses
    assert "- `sky`" not in weaknesses  # above the mIoU: not a weakness


def test_loading_a_version_leaves_the_import_path_to_child_processes(register_version):
    """MLflow puts the model's partial copy of segflow in front of sys.path; a process spawned
    afterwards (torch's mp.spawn, a DataLoader worker) then failed on `import segflow.config`."""
    register_version(2)
    before = list(sys.path)
    mlflow.pyfunc.load_model("models:/tiny@champion")
    try:
        added = [Path(entry) for entry in sys.path[: len(sys.path) - len(before)]]
        assert added and (added[0] / "segflow").is_dir() and not (added[0] / "segflow" / "config").exists()
    finally:
        sys.path[:] = before

    load_pyfunc("models:/tiny@champion").predict(np.zeros((8, 8, 3), np.uint8))
    assert sys.path == before
    assert child_import_error() == ""


def test_pyfunc_predicts_class_index_masks_at_the_input_size(register_version):
    register_version(2)
    model = load_pyfunc("models:/tiny@champion")
    one = model.predict(np.full((50, 70, 3), 90, np.uint8))
    assert one.shape == (50, 70) and one.dtype == np.uint8 and (one == 2).all()
    batch = model.predict(np.zeros((2, 40, 64, 3), np.float32))
    assert batch.shape == (2, 40, 64) and (batch == 2).all()
    ok, jpeg = cv2.imencode(".jpg", np.zeros((10, 90, 3), np.uint8))
    import base64

    frame = pd.DataFrame(
        {
            "image": [
                encode_png(np.zeros((30, 20, 3), np.uint8)),
                "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode(),
            ]
        }
    )
    masks = model.predict(frame)
    assert [mask.shape for mask in masks] == [(30, 20), (10, 90)]
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        model.predict(np.zeros((2, 3, 4, 5, 6)))
    with pytest.raises(ValueError, match="column 'image'"):
        model.predict(pd.DataFrame({"picture": ["x"]}))
    with pytest.raises(ValueError, match="row 0"):
        model.predict(pd.DataFrame({"image": ["bm90IGFuIGltYWdl"]}))


class _Brightness(torch.nn.Module):
    """Class 1 where the mean channel is above 128, class 0 elsewhere."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        return torch.cat([128 - mean, mean - 128], 1)


def test_scale_tiles_and_resize_map_the_mask_back_onto_the_image():
    # 64 x 128 at long side 64: 32 x 64 px in 32 px tiles, back to 64 x 128.
    image = np.zeros((64, 128, 3), np.uint8)
    image[32:, 64:] = 255  # bright bottom-right quarter
    mask = SegmentationModel().attach(_Brightness(), 64, (32, 32)).predict(None, image)
    expected = np.zeros((64, 128), np.uint8)
    expected[32:, 64:] = 1
    np.testing.assert_array_equal(mask, expected)


def test_models_command_lists_versions_with_aliases(
    register_version,
    frozen_split,
    registry_params,
    tmp_path,
    capsys,
    wide_console,
):
    import yaml

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(registry_params.model_dump(mode="json")))
    register_version(0, data_dir=frozen_split / "preprocess")
    register_version(1)
    with pytest.raises(SystemExit) as exit_code:
        main(["models", "--params", str(params_file)])
    out = capsys.readouterr().out
    assert exit_code.value.code == 0
    assert "@champion" in out and "@candidate" in out
    assert "0.0111" in out and "c0ffee" in out and "first champion" in out


def _post(url: str, payload: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_mlflow_models_serve_answers_a_request_with_a_mask(register_version, tmp_path):
    register_version(1)  # the first version: @champion, predicts sky everywhere
    port = free_port()
    log = tmp_path / "serve.log"
    server = start_server(
        [
            "models",
            "serve",
            "-m",
            "models:/tiny@champion",
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        log,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", server, log)
        image = np.full((24, 40, 3), 100, np.uint8)
        answer = _post(
            f"http://127.0.0.1:{port}/invocations",
            {"dataframe_split": {"columns": ["image"], "data": [[encode_png(image)]]}},
        )
        masks = np.array(answer["predictions"])
        assert masks.shape == (1, 24, 40) and (masks == 1).all()
        answer = _post(f"http://127.0.0.1:{port}/invocations", {"inputs": image.tolist()})
        mask = np.array(answer["predictions"])
        assert mask.shape == (24, 40) and set(np.unique(mask)) <= {0, 1, 2} and (mask == 1).all()
    finally:
        stop_server(server)
