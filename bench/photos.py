"""Shared by the training benchmarks: params merging, the real-photo folds, one variant's run.

"photos": every real photo with area annotations in ../shared/datasets, as object vs
background: 3 PASCAL VOC photos with labelme's own masks, birds and a bear (VIA polygons),
strawberries and oranges (VIA rects). Five folds: each polygon-annotated photo is the
test image once, the next one validates, the other five train. Test scores pool the five
test images.

Each fold is a preprocess folder in `segflow.prepared`'s layout, made as the preprocess
stage makes one: the working resolution, crop and tile are planned from the fold's five
training photos with params.yaml's ``preprocess`` settings (`segflow.data.plan`; ``image_size:
auto`` or a fixed size), training and validation photos are stored resized to it, and the
test photo at its original size. An epoch is ``train.steps_per_epoch`` optimiser steps
of crops drawn from the training photos (figures in docs/benchmarks.md from before issue
21 trained 4 crops per photo per epoch, 3 steps at batch 8: not comparable). With
``image_size: auto`` the plan is about 630 px; ``--params`` with a fixed ``image_size:
128`` is the cheap setting. The
test photo is scored at its own resolution through the registered model's prediction path
(`segflow.registry.scoring.score`), as the evaluate stage scores the test split; figures
from before this layout (the photos letterboxed to 128 px and scored there) are not
comparable with these.
"""

from __future__ import annotations

import copy
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segflow.config import Params
from segflow.data.images import read_rgb
from segflow.data.preprocess import plan_for, store
from segflow.inference.network import load_checkpoint
from segflow.metrics import scores_from_confusion
from segflow.prepared import PLAN, SPLIT_INDEX, Entry, Plan, write_plan
from segflow.registry.pyfunc import SegmentationModel
from segflow.registry.scoring import load_test_split, score
from segflow.training.train import train

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"


def merge(base: dict, overrides: dict) -> dict:
    """`base` with `overrides` applied, nested dicts merged key by key."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merge(out.get(key, {}), value) if isinstance(value, dict) else value
    return out


#: Photos with polygon masks (test/val in turn) and with rect masks (always training).
VOC = SHARED / "labelme-examples/examples/semantic_segmentation/data_dataset_voc"
POLYGON_PHOTOS = [
    ("voc 2011_000003", VOC / "JPEGImages/2011_000003.jpg"),
    ("voc 2011_000006", VOC / "JPEGImages/2011_000006.jpg"),
    ("voc 2011_000025", VOC / "JPEGImages/2011_000025.jpg"),
    ("birds", SHARED / "via-2label/HEAD/datasets/via/birds.jpg"),
    ("bear", SHARED / "via-2label/74f5376/datasets/via/img2.jpg"),
]
RECT_PHOTOS = [
    ("strawberries", SHARED / "via-2label/HEAD/datasets/via/strawberry.jpg"),
    ("oranges", SHARED / "via-2label/74f5376/datasets/via/img.jpg"),
]
PHOTO_CLASSES = {"names": ["background", "object"], "palette": [], "label_map": {}}


def via_mask(image_path: Path, height: int, width: int) -> np.ndarray:
    """Object (1) vs background (0) from the VIA CSV beside the image: polygons and rects."""
    mask = np.zeros((height, width), np.uint8)
    with (image_path.parent / "via_region_data.csv").open(newline="") as stream:
        for row in csv.DictReader(stream):
            shape = json.loads(row["region_shape_attributes"])
            if row["filename"] != image_path.name or not shape:
                continue
            if shape["name"] == "polygon":
                points = np.stack([shape["all_points_x"], shape["all_points_y"]], 1).astype(np.int32)
                cv2.fillPoly(mask, [points], 1)
            elif shape["name"] == "rect":
                x, y, w, h = (int(shape[k]) for k in ("x", "y", "width", "height"))
                mask[y : y + h, x : x + w] = 1
    return mask


def load_photo(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(image (H, W, 3) RGB, mask (H, W)) uint8 at the photo's own size (EXIF ignored, as
    the fetch stage reads images)."""
    image = read_rgb(path)
    if path.parent.name == "JPEGImages":  # labelme's VOC masks: 0 background, 255 ignore
        mask = np.array(Image.open(path.parents[1] / "SegmentationClass" / f"{path.stem}.png"))
        mask = np.where(mask == 255, 255, (mask > 0).astype(np.uint8)).astype(np.uint8)
    else:
        mask = via_mask(path, *image.shape[:2])
    return image, mask


Pair = tuple[np.ndarray, np.ndarray]


def plan_photos(params: Params, train_pairs: list[Pair]) -> Plan:
    """The preprocess stage's plan for these training photos (`segflow.data.preprocess.plan_for`)."""
    return plan_for(params, (mask for _, mask in train_pairs))


def write_prepared(folder: Path, plan: Plan, splits: dict[str, list[Pair]]) -> Path:
    """A preprocess output folder (`segflow.prepared`'s layout) from photos at their own
    size, stored as the preprocess stage stores them (`segflow.data.preprocess.store`)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_plan(plan, folder / PLAN)
    index: dict[str, list[dict]] = {}
    for split, pairs in splits.items():
        (folder / split).mkdir(exist_ok=True)
        index[split] = []
        for row, (image, mask) in enumerate(pairs):
            entry = Entry(f"{split}{row}.png", *mask.shape, f"{split}/{row:05d}")
            index[split].append(entry.__dict__)
            store(folder, split, entry, image, mask, plan.long_side)
    (folder / SPLIT_INDEX).write_text(json.dumps(index, indent=1))
    return folder


def photo_folds(tmp: Path, params: Params) -> list[Path]:
    """Preprocessed folders, one per fold (see the module docstring)."""
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: the photos benchmark needs ../shared/datasets")
    polygons = [load_photo(path) for _, path in POLYGON_PHOTOS]
    rects = [load_photo(path) for _, path in RECT_PHOTOS]
    folds = []
    for test in range(len(polygons)):
        val = (test + 1) % len(polygons)
        train_pairs = [pair for i, pair in enumerate(polygons) if i not in (test, val)] + rects
        plan = plan_photos(params, train_pairs)
        splits = {"train": train_pairs, "val": [polygons[val]], "test": [polygons[test]]}
        folds.append(write_prepared(tmp / f"fold{test}", plan, splits))
    return folds


def epochs_to_90(history: Path) -> int:
    """First epoch whose val mIoU reaches 90 % of the best val mIoU of the run."""
    rows = list(csv.DictReader(history.open()))
    best = max(float(row["val_miou"]) for row in rows)
    return next(int(row["epoch"]) for row in rows if float(row["val_miou"]) >= 0.9 * best)


def run_variant(base: dict, overrides: dict, folders: list[Path], tmp: Path, name: str) -> dict:
    """Train on every folder; pool the test scores (confusion matrices) of all folds."""
    params = Params.model_validate(merge(base, overrides))
    names, ignore = list(params.classes.names), params.classes.ignore_index
    confusion = np.zeros((len(names), len(names)), np.int64)
    seconds, to_90, best_epochs, epochs_run = 0.0, [], [], []
    predict_ms, test_images, parameters = 0.0, 0, 0
    for i, folder in enumerate(folders):
        out = tmp / f"{name}-{i}".replace(" ", "_").replace(",", "")
        start = time.perf_counter()
        summary = train(params, folder, out, tmp, tmp / "resume.pt")
        seconds += time.perf_counter() - start
        net, meta = load_checkpoint(out / "model.pt")
        model = SegmentationModel().attach(net, meta.long_side, meta.tile, flip=meta.flip)
        fold = score(model, load_test_split(folder), names, ignore, seed=params.seed)
        confusion += np.array(fold.confusion)
        predict_ms += fold.ms_per_image * fold.images  # CPU: load_checkpoint maps to the CPU
        test_images, parameters = test_images + fold.images, fold.parameters
        to_90.append(epochs_to_90(out / "history.csv"))
        best_epochs.append(summary["best_epoch"])
        epochs_run.append(summary["epochs_run"])
    scores = scores_from_confusion(confusion)
    return {
        "variant": name,
        "loss": params.train.loss,
        "epochs": epochs_run,
        "test_miou": scores["miou"],
        "test_mdice": scores["mdice"],
        "iou": scores["iou"],
        "epochs_to_90": to_90,
        "best_epoch": best_epochs,
        "seconds": seconds,
        "parameters": parameters,
        "ms_per_image": predict_ms / max(test_images, 1),
    }


def run_variants(base: dict, variants: dict[str, dict], dataset: str, data: Path) -> list[dict]:
    """`run_variant` for each of `variants` on `dataset` ("sample": the preprocessed folder
    `data`; "photos": the 5 folds) in a throwaway MLflow store; a line per variant as it ends."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/bench.db"
        if dataset == "photos":
            base = merge(base, {"classes": PHOTO_CLASSES})
            folders = photo_folds(tmp, Params.model_validate(base))
        else:
            folders = [data]
        for name, overrides in variants.items():
            row = run_variant(copy.deepcopy(base), overrides, folders, tmp, name)
            row["folds"] = len(folders)
            rows.append(row)
            print(
                f"{name}: mIoU {row['test_miou']:.4f} Dice {row['test_mdice']:.4f}, 90% of the best val "
                f"mIoU at epoch {row['epochs_to_90']}, {row['seconds']:.0f}s",
                flush=True,
            )
    return rows
