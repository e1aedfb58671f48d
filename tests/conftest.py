"""Shared fixtures: the real params.yaml, shrunk, and small annotated datasets."""
from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from segflow.config import Params

REPO_ROOT = Path(__file__).resolve().parents[1]
#: Real third-party annotation exports (never copied into the repo).
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.fixture
def raw_params() -> dict:
    """The repository's params.yaml as a plain dict."""
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


@pytest.fixture
def make_params(raw_params):
    """Build validated Params from params.yaml with nested overrides."""
    def build(**overrides) -> Params:
        return Params.model_validate(_merge(raw_params, overrides))
    return build


def write_image(path: Path, width: int = 40, height: int = 30, value: int = 128) -> Path:
    """A plain JPEG with a little texture, so it decodes to a known size."""
    rng = np.random.default_rng(0)
    image = np.full((height, width, 3), value, np.uint8) + rng.integers(0, 20, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)
    return path


VIA_HEADER = "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes"


def via_row(filename: str, count: int, region_id: int, shape: str, label: str) -> str:
    """One VIA CSV row; `shape` and `label` are raw JSON strings (quoted as VIA does)."""
    quote = lambda text: '"' + text.replace('"', '""') + '"'  # noqa: E731
    return ",".join([filename, "100", quote("{}"), str(count), str(region_id), quote(shape), quote(label)])


@pytest.fixture
def via_dataset(tmp_path) -> Path:
    """A folder with two images and a VIA CSV: a car polygon and a sky rect, and a person."""
    source = tmp_path / "data"
    write_image(source / "a.jpg")
    write_image(source / "b.jpg")
    rows = [
        VIA_HEADER,
        via_row("a.jpg", 2, 0, '{"name":"rect","x":0,"y":0,"width":40,"height":10}', '{"label":"sky"}'),
        via_row("a.jpg", 2, 1, '{"name":"polygon","all_points_x":[5,15,15,5],"all_points_y":[12,12,22,22]}', '{"label":"car"}'),
        via_row("b.jpg", 1, 0, '{"name":"polygon","all_points_x":[20,30,25],"all_points_y":[5,5,25]}', '{"label":"person"}'),
    ]
    (source / "via_region_data.csv").write_text("\n".join(rows) + "\n")
    return source
