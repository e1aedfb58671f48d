"""The typed contracts between stages (the plan, the manifest, the dataset report, the
checkpoint's metadata): each file, as committed or as the real pipeline wrote it, read and
written back unchanged, byte for byte, and a mistyped key refused with the file and the key
named."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from segflow.data.manifest import read_manifest, write_manifest
from segflow.data.report import read_report, write_report
from segflow.errors import SegflowError
from segflow.inference.network import CheckpointMeta, build_model, load_checkpoint, save_checkpoint
from segflow.prepared import read_plan, write_plan

ROOT = Path(__file__).resolve().parents[1]

#: Each contract's file as the pipeline left it (under artifacts/), and its reader and writer
#: (both by folder: the file's name is the contract's own).
CONTRACTS: dict[str, tuple[Callable, Callable]] = {
    "artifacts/plan.json": (read_plan, lambda plan, folder: write_plan(plan, folder / "plan.json")),
    "artifacts/preprocess/plan.json": (read_plan, lambda plan, folder: write_plan(plan, folder / "plan.json")),
    "artifacts/fetch/manifest.json": (read_manifest, write_manifest),
    "artifacts/fetch/report.json": (read_report, write_report),
    "artifacts/report/report.json": (read_report, write_report),
}


def _contract_file(relative: str, request: pytest.FixtureRequest) -> Path:
    """The file as committed to git here, or (a DVC output, e.g. the manifest or the model)
    as the real pipeline wrote it in the session's clone (conftest.repro_clone)."""
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", relative], cwd=ROOT, capture_output=True)
    if tracked.returncode == 0:
        return ROOT / relative
    root, _, _ = request.getfixturevalue("repro_clone")
    return root / relative


@pytest.mark.parametrize("relative", sorted(CONTRACTS))
def test_the_pipelines_file_reads_and_writes_back_byte_for_byte(relative, tmp_path, request):
    path = _contract_file(relative, request)
    read, write = CONTRACTS[relative]
    contract = read(path.parent)
    write(contract, tmp_path)
    assert (tmp_path / path.name).read_bytes() == path.read_bytes()
    assert read(tmp_path) == contract


def _mangled(relative: str, tmp_path: Path, change: Callable[[dict], None], request: pytest.FixtureRequest) -> Path:
    """A copy of the contract's file with `change` made to its JSON data; returns its folder."""
    path = _contract_file(relative, request)
    data = json.loads(path.read_text())
    change(data)
    (tmp_path / path.name).write_text(json.dumps(data, indent=1))
    return tmp_path


def test_a_mistyped_plan_key_names_the_file_and_the_key(tmp_path, request):
    folder = _mangled("artifacts/plan.json", tmp_path, lambda plan: plan.update(crp=plan.pop("crop")), request)
    with pytest.raises(SegflowError) as error:
        read_plan(folder)
    message = str(error.value)
    assert str(folder / "plan.json") in message and "not a valid Plan" in message
    assert "key 'crop': Field required" in message and "key 'crp': Extra inputs are not permitted" in message
    assert "rerun the stage that writes it" in message


def test_a_mistyped_key_deep_in_the_manifest_is_named_with_its_path(tmp_path, request):
    def rename(manifest: dict) -> None:
        manifest["files"][1]["sha265"] = manifest["files"][1].pop("sha256")

    folder = _mangled("artifacts/fetch/manifest.json", tmp_path, rename, request)
    with pytest.raises(SegflowError, match=r"manifest.json is not a valid Manifest \(key 'files.1.sha256'"):
        read_manifest(folder)


def test_a_value_of_the_wrong_type_in_the_report_is_named(tmp_path, request):
    folder = _mangled("artifacts/report/report.json", tmp_path, lambda report: report.update(images="many"), request)
    with pytest.raises(SegflowError, match=r"report.json is not a valid DatasetReport \(key 'images': Input should"):
        read_report(folder)


def test_a_missing_contract_file_says_which_stage_to_rerun(tmp_path):
    with pytest.raises(SegflowError, match=r"plan.json: cannot be read .*rerun the stage that writes it"):
        read_plan(tmp_path)


def test_the_checkpoint_metadata_is_written_back_key_for_key(tmp_path, request):
    """The committed model's metadata, written again by the one writer: the same keys, in
    the same order, with the same values and types (so the pickled checkpoint is the same)."""
    path = _contract_file("artifacts/train/model.pt", request)
    model, meta = load_checkpoint(path)
    save_checkpoint(model, tmp_path / "model.pt", meta)
    before, after = (torch.load(p, map_location="cpu", weights_only=True) for p in (path, tmp_path / "model.pt"))
    fields = [(key, type(value), value) for key, value in before.items() if key != "state_dict"]
    assert fields == [(key, type(value), value) for key, value in after.items() if key != "state_dict"]
    keys = ["arch", "encoder", "class_names", "long_side", "tile", "flip", "graph", "epoch", "val_miou"]
    assert [key for key, _, _ in fields] == keys  # the sample's model: one network, no folds
    assert all(torch.equal(before["state_dict"][k], v) for k, v in after["state_dict"].items())
    assert load_checkpoint(tmp_path / "model.pt")[1] == meta


def test_a_mistyped_checkpoint_key_names_the_file_and_the_key(tmp_path):
    model = build_model("Unet", "resnet18", 3)
    save_checkpoint(model, tmp_path / "model.pt", CheckpointMeta("Unet", "resnet18", ("a", "b", "c"), 64, (64, 64)))
    checkpoint = torch.load(tmp_path / "model.pt", weights_only=True)
    assert "epoch" not in checkpoint  # a training field left None is not written
    checkpoint["val_mIoU"] = checkpoint.pop("long_side")
    torch.save(checkpoint, tmp_path / "typo.pt")
    with pytest.raises(SegflowError) as error:
        load_checkpoint(tmp_path / "typo.pt")
    message = str(error.value)
    assert str(tmp_path / "typo.pt") in message
    assert "unknown keys ['val_mIoU']" in message and "missing keys ['long_side']" in message
