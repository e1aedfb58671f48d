"""Segment photos with one loaded model, writing each photo's outputs as soon as it is done.

For a photo named ``sub/a.jpg`` (see `segflow.predict.inputs`), below the output folder:

* ``masks/sub/a.png``: its class-index mask at the photo's own size (a palette PNG: pixel
  values are class indices, viewers show class colours; segflow's ``mask_images`` reader
  pairs it with the photo by name);
* ``overlays/sub/a.jpg``: the mask's colours over the photo (with ``overlay``);
* ``records/sub/a.json``: size, file bytes, confidence, seconds, the model, and the pixels
  and share of each class. Written last: a photo counts as done when its record (naming
  the same model) and its files exist, so an interrupted run resumes where it stopped.

Photos are read as training reads them (`segflow.data.images.read_rgb`: the stored
pixels, EXIF orientation not applied, the grid annotation coordinates refer to), so
masks and exported polygons line up with what rasterize and fetch see. A photo that
cannot be read is reported and skipped; the next one is decoded in a thread while the
model runs on the current one (the model itself runs tiles in batches).
"""

from __future__ import annotations

import io
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from segflow.colours import overlay as blend
from segflow.data.images import read_rgb
from segflow.errors import ImageError
from segflow.pixel_limit import DEFAULT_MAX_PIXELS
from segflow.predict.inputs import Photo
from segflow.runtime.encode import class_shares, mask_png
from segflow.runtime.predictor import Predictor

__all__ = ["PREDICTED", "DONE_BEFORE", "FAILED", "Outcome", "model_id", "segment_photos"]

#: `Outcome.status` values.
PREDICTED, DONE_BEFORE, FAILED = "predicted", "done before", "failed"


@dataclass
class Outcome:
    """What became of one photo: its record (None when it failed) or the error."""

    name: str
    status: str
    record: dict | None = None
    error: str = ""
    files: dict[str, Path] = field(default_factory=dict)


def model_id(predictor: Predictor) -> str:
    """Names the loaded model in records: a photo done by another model is predicted again."""
    info = predictor.info
    return f"{info.name} v{info.version} ({info.runtime}, {info.bytes} bytes, {info.source})"


def _files(out: Path, name: str) -> dict[str, Path]:
    stem = PurePosixPath(name).with_suffix("").as_posix()
    return {
        "mask": out / "masks" / f"{stem}.png",
        "overlay": out / "overlays" / f"{stem}.jpg",
        "record": out / "records" / f"{stem}.json",
    }


def _write(path: Path, data: bytes) -> None:
    """`data` at `path`, replaced in one step (an interrupted write leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    partial.write_bytes(data)
    os.replace(partial, path)


def _done(files: dict[str, Path], model: str, overlay: bool) -> dict | None:
    """The photo's record if a run of `model` finished it (with the outputs asked for now)."""
    if not files["record"].is_file() or not files["mask"].is_file() or (overlay and not files["overlay"].is_file()):
        return None
    try:
        record = json.loads(files["record"].read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("model") == model else None


def _read(photo: Photo, max_pixels: int) -> np.ndarray | ImageError:
    """The photo's pixels, or why they cannot be had (never raised: one bad photo must not
    stop the batch); a photo over `max_pixels` is refused from its header, undecoded."""
    try:
        return read_rgb(photo.path, max_pixels=max_pixels)
    except ImageError as exc:
        return exc
    except (cv2.error, MemoryError) as exc:  # e.g. over OpenCV's pixel limit (CV_IO_MAX_IMAGE_PIXELS)
        return ImageError(f"{photo.path}: cannot decode it ({type(exc).__name__}: {exc}); resize it or leave it out")


def _sort_out(
    photos: list[Photo], out: Path, model: str, overlay: bool, force: bool
) -> tuple[list[Outcome], list[tuple[Photo, dict[str, Path]]]]:
    """The photos' outcomes known before predicting (done before, or an output name taken by
    an earlier photo), and the photos still to predict with their output files."""
    outcomes: list[Outcome] = []
    todo: list[tuple[Photo, dict[str, Path]]] = []
    stems: dict[Path, str] = {}
    for photo in photos:
        files = _files(out, photo.name)
        if files["mask"] in stems:
            error = f"same output name as {stems[files['mask']]}: rename one of them"
            outcomes.append(Outcome(photo.name, FAILED, error=error))
            continue
        stems[files["mask"]] = photo.name
        record = None if force else _done(files, model, overlay)
        if record is not None:
            outcomes.append(Outcome(photo.name, DONE_BEFORE, record, files=files))
        else:
            todo.append((photo, files))
    return outcomes, todo


def segment_photos(
    predictor: Predictor,
    photos: list[Photo],
    out: Path,
    *,
    overlay: bool = False,
    force: bool = False,
    progress: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Outcome]:
    """Segment `photos` into `out` (see the module docstring); one outcome per photo.

    A photo over `max_pixels` (``fetch.max_pixels``) fails, refused from its header.

    `force` predicts photos done before again. Photos whose names differ only in the
    suffix (``a.jpg``, ``a.png``) would share outputs: the second fails, saying so.
    """
    info, model = predictor.info, model_id(predictor)
    outcomes, todo = _sort_out(photos, out, model, overlay, force)
    colours = np.array(info.palette, dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_read, todo[0][0], max_pixels) if todo else None
        for index, (photo, files) in enumerate(tqdm(todo, desc="predict", unit="img", disable=not progress)):
            image = pending.result()
            pending = pool.submit(_read, todo[index + 1][0], max_pixels) if index + 1 < len(todo) else None
            if isinstance(image, ImageError):
                outcomes.append(Outcome(photo.name, FAILED, error=str(image)))
                continue
            start = time.perf_counter()
            mask, confidence = predictor.predict_scored(image)
            seconds = time.perf_counter() - start
            _write(files["mask"], mask_png(mask, info.palette))
            if overlay:
                _write(files["overlay"], _jpeg(blend(image, mask, colours)))
            height, width = mask.shape
            record = {
                "name": photo.name,
                "height": height,
                "width": width,
                "bytes": photo.path.stat().st_size,
                "confidence": round(confidence, 6),
                "seconds": round(seconds, 4),
                "model": model,
                "classes": class_shares(mask, info.class_names, info.palette),
            }
            _write(files["record"], json.dumps(record, indent=1).encode())
            outcomes.append(Outcome(photo.name, PREDICTED, record, files=files))
    return sorted(outcomes, key=lambda outcome: outcome.name)


def _jpeg(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
