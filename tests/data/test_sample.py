"""Tests for sample: the deterministic synthetic street-scene generator."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest
from sample import SAMPLE_CLASSES, generate_sample

from segflow.data.readers.via import read_via_csv

# Small enough to be fast, large enough that every object kind fits.
WIDTH, HEIGHT, N_IMAGES, SEED = 96, 72, 4, 3
HEADER = [
    "filename",
    "file_size",
    "file_attributes",
    "region_count",
    "region_id",
    "region_shape_attributes",
    "region_attributes",
]


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small sample, generated once for the module."""
    out = tmp_path_factory.mktemp("sample") / "data"
    generate_sample(out, n_images=N_IMAGES, width=WIDTH, height=HEIGHT, seed=SEED)
    return out


@pytest.fixture(scope="module")
def rows(sample_dir: Path) -> list[dict[str, str]]:
    with (sample_dir / "via_region_data.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == HEADER
        return list(reader)


def by_image(rows: list[dict[str, str]]) -> dict[str, list[dict[str, str]]]:
    grouped = defaultdict(list)
    for row in rows:
        grouped[row["filename"]].append(row)
    return grouped


def shape_mask(shape: dict, value: int, mask: np.ndarray) -> None:
    """Paint one VIA shape the way segflow.data.rasterize does (rect covers x .. x+width-1)."""
    if shape["name"] == "polygon":
        points = np.array([shape["all_points_x"], shape["all_points_y"]], np.int32).T
        cv2.fillPoly(mask, [points], value)
    else:
        corner = (shape["x"] + shape["width"] - 1, shape["y"] + shape["height"] - 1)
        cv2.rectangle(mask, (shape["x"], shape["y"]), corner, value, cv2.FILLED)


def test_same_arguments_give_identical_bytes(sample_dir: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_sample(again, n_images=N_IMAGES, width=WIDTH, height=HEIGHT, seed=SEED)
    names = sorted(path.name for path in sample_dir.iterdir())
    assert names == sorted(path.name for path in again.iterdir())
    assert len(names) == N_IMAGES + 1
    for name in names:
        assert (sample_dir / name).read_bytes() == (again / name).read_bytes(), name


def test_another_seed_gives_other_images(sample_dir: Path, tmp_path: Path) -> None:
    generate_sample(tmp_path / "other", n_images=1, width=WIDTH, height=HEIGHT, seed=SEED + 1)
    assert (tmp_path / "other" / "scene_000.jpg").read_bytes() != (sample_dir / "scene_000.jpg").read_bytes()


def test_csv_is_written_as_via_writes_it(sample_dir: Path) -> None:
    text = (sample_dir / "via_region_data.csv").read_bytes().decode("utf-8")
    lines = text.split("\n")
    assert lines[0] == ",".join(HEADER)
    assert not text.endswith("\n") and "\r" not in text  # VIA joins rows with "\n"
    first = lines[1].split(",", 5)
    assert first[0] == "scene_000.jpg" and first[2] == '"{}"'
    assert first[5].startswith('"{""name"":""')
    assert first[5].endswith('"{""label"":""sky""}"')


def test_counts_sizes_and_ids_agree(sample_dir: Path, rows: list[dict[str, str]]) -> None:
    grouped = by_image(rows)
    assert sorted(grouped) == [f"scene_{i:03d}.jpg" for i in range(N_IMAGES)]
    for filename, image_rows in grouped.items():
        path = sample_dir / filename
        assert cv2.imread(str(path)).shape == (HEIGHT, WIDTH, 3)
        assert [int(row["region_id"]) for row in image_rows] == list(range(len(image_rows)))
        for row in image_rows:
            assert int(row["region_count"]) == len(image_rows)
            assert int(row["file_size"]) == path.stat().st_size
            assert row["file_attributes"] == "{}"


def test_shapes_lie_inside_the_image(rows: list[dict[str, str]]) -> None:
    for row in rows:
        shape = json.loads(row["region_shape_attributes"])
        assert json.loads(row["region_attributes"])["label"] in SAMPLE_CLASSES[1:]
        if shape["name"] == "rect":
            assert shape["x"] >= 0 and shape["x"] + shape["width"] <= WIDTH
            assert shape["y"] >= 0 and shape["y"] + shape["height"] <= HEIGHT
            assert shape["width"] > 0 and shape["height"] > 0
            continue
        assert shape["name"] == "polygon"
        xs, ys = shape["all_points_x"], shape["all_points_y"]
        assert len(xs) == len(ys) and len(set(zip(xs, ys))) >= 3
        assert all(isinstance(v, int) for v in xs + ys)
        assert 0 <= min(xs) and max(xs) < WIDTH and 0 <= min(ys) and max(ys) < HEIGHT


def test_regions_are_listed_back_to_front(rows: list[dict[str, str]]) -> None:
    for filename, image_rows in by_image(rows).items():
        labels = [json.loads(row["region_attributes"])["label"] for row in image_rows]
        assert labels[0] == "sky" and labels.count("sky") == 1, filename
        road = labels.index("road")
        assert labels.count("road") == 1 and set(labels[1:road]) == {"building"}, filename
        bottoms = [max(json.loads(row["region_shape_attributes"])["all_points_y"]) for row in image_rows[road + 1 :]]
        assert set(labels[road + 1 :]) <= {"car", "person"} and bottoms == sorted(bottoms)


def test_sky_and_buildings_leave_no_gap(rows: list[dict[str, str]]) -> None:
    """Above the road's top row every pixel is annotated: the skyline trace misses nothing."""
    for filename, image_rows in by_image(rows).items():
        mask = np.zeros((HEIGHT, WIDTH), np.uint8)
        for row in image_rows:
            label = json.loads(row["region_attributes"])["label"]
            shape_mask(json.loads(row["region_shape_attributes"]), SAMPLE_CLASSES.index(label), mask)
        road = next(
            json.loads(row["region_shape_attributes"])
            for row in image_rows
            if json.loads(row["region_attributes"])["label"] == "road"
        )
        horizon = min(road["all_points_y"])
        assert (mask[:horizon] == 0).sum() == 0, filename
        assert (mask == SAMPLE_CLASSES.index("sky")).any() and (mask[horizon:] == 0).any()


def test_segflow_reads_the_sample(sample_dir: Path) -> None:
    images = read_via_csv(sample_dir / "via_region_data.csv", "label")
    assert len(images) == N_IMAGES
    assert all(region.label in SAMPLE_CLASSES for image in images for region in image.regions)


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="remove it first"):
        generate_sample(tmp_path, n_images=1, width=WIDTH, height=HEIGHT)
    assert [path.name for path in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("kwargs", [{"n_images": 0}, {"width": 32}, {"height": 20}])
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="at least"):
        generate_sample(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()
