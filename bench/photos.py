"""Shared by the training benchmarks: params merging, the real-photo folds, one variant's run.

"photos": every real photo with area annotations in ../shared/datasets, as object vs
background: 3 PASCAL VOC photos with labelme's own masks, birds and a bear (VIA polygons),
strawberries and oranges (VIA rects). Five folds: each polygon-annotated photo is the
test image once, the next one validates, the other five train (each repeated 4 times per
epoch, so an epoch is a few optimiser steps). Test scores pool the five test images.
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
import torch
from PIL import Image

from segflow.config import Params
from segflow.inference.network import load_checkpoint
from segflow.inference.segment import letterbox
from segflow.metrics import SegmentationMeter
from segflow.training.dataset import load_split
from segflow.training.evaluate import predict
from segflow.training.losses import build_loss
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
TRAIN_REPEAT = 4


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


def load_photo(path: Path, size: int) -> tuple[np.ndarray, np.ndarray]:
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    if path.parent.name == "JPEGImages":  # labelme's VOC masks: 0 background, 255 ignore
        mask = np.array(Image.open(path.parents[1] / "SegmentationClass" / f"{path.stem}.png"))
        mask = np.where(mask == 255, 255, (mask > 0).astype(np.uint8)).astype(np.uint8)
    else:
        mask = via_mask(path, *image.shape[:2])
    return letterbox(image, size), letterbox(mask, size, fill=255, nearest=True)


def write_split(out: Path, split: str, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / f"{split}_images.npy", np.stack([image for image, _ in pairs]))
    np.save(out / f"{split}_masks.npy", np.stack([mask for _, mask in pairs]))


def photo_folds(tmp: Path, size: int) -> list[Path]:
    """Preprocessed folders, one per fold (see the module docstring)."""
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is absent: the photos benchmark needs ../shared/datasets")
    polygons = [load_photo(path, size) for _, path in POLYGON_PHOTOS]
    rects = [load_photo(path, size) for _, path in RECT_PHOTOS]
    folds = []
    for test in range(len(polygons)):
        val = (test + 1) % len(polygons)
        train_pairs = [pair for i, pair in enumerate(polygons) if i not in (test, val)] + rects
        folder = tmp / f"fold{test}"
        write_split(folder, "train", train_pairs * TRAIN_REPEAT)
        write_split(folder, "val", [polygons[val]])
        write_split(folder, "test", [polygons[test]])
        folds.append(folder)
    return folds


def epochs_to_90(history: Path) -> int:
    """First epoch whose val mIoU reaches 90 % of the best val mIoU of the run."""
    rows = list(csv.DictReader(history.open()))
    best = max(float(row["val_miou"]) for row in rows)
    return next(int(row["epoch"]) for row in rows if float(row["val_miou"]) >= 0.9 * best)


def run_variant(base: dict, overrides: dict, folders: list[Path], tmp: Path, name: str) -> dict:
    """Train on every folder; pool the test predictions of all folds."""
    params = Params.model_validate(merge(base, overrides))
    meter = SegmentationMeter(len(params.classes.names), params.classes.ignore_index)
    loss_fn = build_loss(params.train.loss, params.classes.ignore_index)
    seconds, to_90, best_epochs, epochs_run = 0.0, [], [], []
    for i, folder in enumerate(folders):
        out = tmp / f"{name}-{i}".replace(" ", "_").replace(",", "")
        start = time.perf_counter()
        summary = train(params, folder, out, tmp, tmp / "resume.pt")
        seconds += time.perf_counter() - start
        model, _ = load_checkpoint(out / "model.pt")
        images, masks = load_split(folder, "test")
        predictions, _ = predict(model, images, masks, loss_fn, 8, torch.device("cpu"))
        meter.update(torch.from_numpy(predictions), torch.from_numpy(np.asarray(masks)))
        to_90.append(epochs_to_90(out / "history.csv"))
        best_epochs.append(summary["best_epoch"])
        epochs_run.append(summary["epochs_run"])
    scores = meter.compute()
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
            folders = photo_folds(tmp, base["preprocess"]["image_size"])
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
