"""Deterministic generator of the embedded sample dataset: synthetic street scenes.

Each scene is a JPEG with a sky, a row of buildings, a road seen in perspective, cars
and people, annotated as VIA 2.x exports it: one ``via_region_data.csv`` beside the
images. Every annotated object is painted from the very integer vertices written to
the CSV, so masks rasterized from the CSV agree with the picture. What no region
covers (sidewalk, curb, grass, hedges) is background. Regions are listed back to
front, because the rasterizer paints later regions over earlier ones.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
from sample_scene import draw_scene
from tqdm import tqdm

__all__ = ["SAMPLE_CLASSES", "generate_sample"]

log = logging.getLogger(__name__)

#: Class names in class-index order; "background" is every pixel no region covers.
SAMPLE_CLASSES = ("background", "sky", "building", "road", "car", "person")

#: Quality of the written JPEGs: high enough that blocking does not smear object edges.
_JPEG_QUALITY = 90
#: First line of a VIA 2.x CSV export.
_CSV_HEADER = "filename,file_size,file_attributes,region_count,region_id,region_shape_attributes,region_attributes"
#: Smallest (width, height) the layout fits in: below it windows and people vanish.
_MIN_SIZE = (64, 48)


def _quote(text: str) -> str:
    # VIA quotes every JSON column, even "{}", and nothing else: csv's QUOTE_MINIMAL would
    # leave "{}" bare, so the cells are quoted here to write VIA's bytes exactly.
    return '"' + text.replace('"', '""') + '"'


def generate_sample(out_dir: Path, n_images: int = 120, width: int = 320, height: int = 240, seed: int = 0) -> None:
    """Write synthetic street scenes and their VIA 2.x CSV annotations into `out_dir`.

    Writes ``scene_000.jpg`` ... and ``via_region_data.csv`` (label attribute ``label``,
    classes `SAMPLE_CLASSES`). The same arguments always give byte-identical files.

    Args:
        out_dir: folder to create; it may exist only if empty.
        n_images: number of scenes.
        width, height: image size in pixels, at least 64 x 48.
        seed: seeds the one random generator that makes every choice.

    Raises:
        ValueError: `n_images` below 1 or the size below 64 x 48.
        FileExistsError: `out_dir` exists and is not an empty folder.
    """
    if n_images < 1:
        raise ValueError(f"n_images is {n_images}; ask for at least 1 image")
    if width < _MIN_SIZE[0] or height < _MIN_SIZE[1]:
        raise ValueError(f"image size {width}x{height} is too small; use at least {_MIN_SIZE[0]}x{_MIN_SIZE[1]}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FileExistsError(
            f"{out_dir} already exists and is not empty; remove it first or choose another output folder"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines, total = [_CSV_HEADER], 0
    for index in tqdm(range(n_images), desc="sample", unit="img"):
        image, regions = draw_scene(rng, width, height)
        name = f"scene_{index:0{max(3, len(str(n_images - 1)))}d}.jpg"
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
        if not ok:
            raise OSError(f"OpenCV could not encode {name} as JPEG")
        (out_dir / name).write_bytes(jpeg.tobytes())
        total += jpeg.size
        for region_id, region in enumerate(regions):
            label = json.dumps({"label": region.label}, separators=(",", ":"))
            lines.append(
                ",".join(
                    [
                        name,
                        str(jpeg.size),
                        _quote("{}"),
                        str(len(regions)),
                        str(region_id),
                        _quote(region.shape_json()),
                        _quote(label),
                    ]
                )
            )
    # VIA joins rows with "\n" and ends the file without one.
    (out_dir / "via_region_data.csv").write_bytes("\n".join(lines).encode("utf-8"))
    log.info("wrote %d scenes (%d bytes of JPEG) and %d regions to %s", n_images, total, len(lines) - 1, out_dir)
