"""Benchmark: segflow's rasterizer against cityscapesscripts' json2labelImg, side by side.

Writes synthetic full-size Cityscapes polygons files (2048x1024, 120 objects of 8-80
vertices each, every label of the official table, crowds, deleted objects and licence
plates), then, file by file and alternating the order, turns each into trainIds with
  official      - json2labelImg(json, png, "trainIds") from cityscapesscripts;
  segflow       - parse_cityscapes -> the `classes.preset: cityscapes` label map ->
                  rasterize_image (rasterize.fill: pil, what `auto` picks) -> cv2.imwrite;
and, to separate drawing from PNG encoding, the same two without writing the file:
  official-draw - Annotation.fromJsonFile + json2labelImg.createLabelImage -> array;
  segflow-draw  - parse_cityscapes + label map + rasterize_image;
  opencv-draw   - the same with rasterize.fill: opencv (the other rule; not equal).
Each repeat times every file; the median over repeats of the per-frame time is reported.
segflow's PNGs must equal json2labelImg's pixel for pixel, or the script fails.

    python bench/rasterize_cityscapes.py [--frames 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.annotation import Annotation
from cityscapesscripts.helpers.labels import labels
from cityscapesscripts.preparation.json2labelImg import createLabelImage, json2labelImg

from segflow.config import ClassesParams
from segflow.data.draw import DrawRules, rasterize_image
from segflow.data.readers.cityscapes import parse_cityscapes

WIDTH, HEIGHT = 2048, 1024


def write_frames(root: Path, frames: int, seed: int = 0) -> list[Path]:
    """Synthetic polygons files: big stuff regions first, then many small objects."""
    rng = np.random.default_rng(seed)
    names = [label.name for label in labels] + ["cargroup", "persongroup", "bicyclegroup"]
    paths = []
    for frame in range(frames):
        objects = []
        for k in range(120):
            big = k < 15
            n = int(rng.integers(30, 80) if big else rng.integers(8, 40))
            centre = rng.uniform([-50, -50], [WIDTH + 50, HEIGHT + 50])
            radius = rng.uniform(150, 600, n) if big else rng.uniform(8, 90, n)
            angle = np.sort(rng.uniform(0, 2 * np.pi, n))
            polygon = np.round(centre + np.stack([radius * np.cos(angle), radius * np.sin(angle)], 1))
            objects.append(
                {
                    "label": names[int(rng.integers(len(names)))],
                    "deleted": int(k % 50 == 7),
                    "polygon": polygon.astype(int).tolist(),
                }
            )
        path = root / "gtFine" / "val" / "benchcity" / f"benchcity_{frame:06d}_000019_gtFine_polygons.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": objects}))
        paths.append(path)
    return paths


def segflow_mask(path: Path, classes: ClassesParams, fill: str) -> np.ndarray:
    """segflow's path from a polygons file to a trainIds mask."""
    record = parse_cityscapes(path, json.loads(path.read_text()))
    mapped = replace(record, regions=tuple(replace(r, label=classes.class_of(r.label)) for r in record.regions))
    return rasterize_image(
        mapped,
        HEIGHT,
        WIDTH,
        classes.names,
        classes.ignore_index,
        ignore_index=classes.ignore_index,
        rules=DrawRules(fill=fill),
    )


def official_mask(path: Path) -> np.ndarray:
    """json2labelImg without saving: cityscapesscripts' parser and drawing."""
    annotation = Annotation()
    annotation.fromJsonFile(str(path))
    return np.asarray(createLabelImage(annotation, "trainIds"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    classes = ClassesParams.model_validate({"preset": "cityscapes"})
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        paths = write_frames(root, args.frames)
        masks: dict[str, np.ndarray] = {}
        runs = {
            "official": lambda p: json2labelImg(str(p), str(root / "official.png"), "trainIds"),
            "segflow": lambda p: cv2.imwrite(str(root / "segflow.png"), segflow_mask(p, classes, "pil")),
            "official-draw": lambda p: masks.__setitem__("official", official_mask(p)),
            "segflow-draw": lambda p: masks.__setitem__("segflow", segflow_mask(p, classes, "pil")),
            "opencv-draw": lambda p: masks.__setitem__("opencv", segflow_mask(p, classes, "opencv")),
        }
        totals: dict[str, list[float]] = {name: [] for name in runs}
        differ = 0
        for repeat in range(args.repeats):
            spent = dict.fromkeys(runs, 0.0)
            for index, path in enumerate(paths):
                order = list(runs) if (index + repeat) % 2 == 0 else list(reversed(runs))
                for name in order:
                    start = time.perf_counter()
                    runs[name](path)
                    spent[name] += time.perf_counter() - start
                if repeat == 0:  # check every file once
                    png = [cv2.imread(str(root / f"{n}.png"), cv2.IMREAD_UNCHANGED) for n in ("official", "segflow")]
                    for ours, reference in ((png[1], png[0]), (masks["segflow"], masks["official"])):
                        if not np.array_equal(ours, reference):
                            raise SystemExit(
                                f"{path.name}: segflow differs from json2labelImg in "
                                f"{int((ours != reference).sum())} pixels"
                            )
                    differ += int((masks["opencv"] != masks["official"]).sum())
            for name in runs:
                totals[name].append(1000 * spent[name] / len(paths))
    ms = {name: statistics.median(values) for name, values in totals.items()}
    print(
        f"{os.cpu_count()} cores; {args.frames} frames of {WIDTH}x{HEIGHT}, 120 polygons each; "
        f"median of {args.repeats} repeats"
    )
    print("| JSON ->  | rasterizer | ms / frame | speed vs json2labelImg | trainIds |")
    print("|---|---|---|---|---|")
    rows = (
        ("PNG file", "official", "official", "cityscapesscripts `json2labelImg`", "reference"),
        ("PNG file", "segflow", "official", "segflow (`fill: pil`, = auto)", "equal, every pixel"),
        ("array", "official-draw", "official-draw", "cityscapesscripts `createLabelImage`", "reference"),
        ("array", "segflow-draw", "official-draw", "segflow (`fill: pil`, = auto)", "equal, every pixel"),
        (
            "array",
            "opencv-draw",
            "official-draw",
            "segflow (`fill: opencv`)",
            f"{100 * differ / (len(paths) * WIDTH * HEIGHT):.2f}% of pixels differ",
        ),
    )
    for output, name, baseline, label, result in rows:
        print(f"| {output} | {label} | {ms[name]:.1f} | {ms[baseline] / ms[name]:.2f}x | {result} |")


if __name__ == "__main__":
    main()
