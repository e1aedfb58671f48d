"""The fetch stage: a source of annotated photos -> a validated, normalised snapshot.

The snapshot folder holds ``images/`` (the annotated images, copied, named by their
path inside the source), one canonical ``annotations.json`` (see `segflow.data.records`)
whose labels are already mapped to class names (or ``ignore``), ``manifest.json``
(the reader used, every image's size, sha256 and perceptual hash, and the near-duplicate
pairs, see `segflow.data.near_duplicates`), ``report.json`` (see `segflow.data.report`)
and ``classes.yaml``: the class list in effect, typed or found for ``classes.names: auto``
(see `segflow.data.found_classes`). Nothing downstream reads the source again. Images are copied byte
for byte; sizes are those of the stored pixels, EXIF orientation ignored (see
`segflow.data.images`: annotation tools draw on the stored pixels).

Which annotation files are read, how image names become snapshot names and where a
record's split comes from: see `segflow.data.collect`. Regions without a label get
``fetch.default_label`` (counted in the report); with none set, they are bad records.
Regions that lie wholly outside their image are dropped, those partly outside are kept
and counted as clipped; a coordinate beyond ±1e6 px (or not finite) is a bad record.
Polylines and points are kept: rasterize decides whether to draw them. With
``fetch.bad_records: skip`` a bad record is dropped and counted instead of stopping the stage.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

from segflow.config import AUTO, IGNORE, Params
from segflow.config.auto_classes import write_classes
from segflow.data.collect import Collected, collect
from segflow.data.drops import Drops
from segflow.data.found_classes import resolve_classes
from segflow.data.images import read_rgb
from segflow.data.manifest import Manifest, ManifestFile, write_manifest
from segflow.data.near_duplicates import near_duplicate_pairs, perceptual_hash
from segflow.data.readers.mask_images import mask_rules
from segflow.data.records import ImageAnnotation, Region, write_annotations
from segflow.data.report import fetch_report, write_report
from segflow.data.sources import materialise
from segflow.errors import AnnotationError, ConfigError, ImageError, SegflowError
from segflow.outputs import atomic_dir, file_sha256

__all__ = ["CLASSES_FILE", "fetch"]

log = logging.getLogger(__name__)

# Pixels a shape may poke out of the image before it counts as clipped (vertices drawn
# on the border often land half a pixel outside).
_SLACK = 0.5
#: The snapshot's class list in effect (see segflow.config.auto_classes); dvc.yaml names it too.
CLASSES_FILE = "classes.yaml"
# Largest coordinate (in pixels, either sign) a region may have: far beyond any photo,
# yet far inside the int32 that OpenCV draws with (x16 for its sub-pixel bits).
_MAX_COORDINATE = 1e6
# Uncovered images named in the warning; report.json keeps as many examples.
_SHOWN = 5


@contextmanager
def _cache(cache_dir: Path | None, out_dir: Path) -> Iterator[Path]:
    """`cache_dir`, or a temporary folder beside `out_dir` removed afterwards."""
    if cache_dir is not None:
        yield cache_dir
        return
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-cache.", dir=out_dir.parent) as folder:
        yield Path(folder)


def _copy_image(source: Path, record: ImageAnnotation, target: Path, max_pixels: int) -> np.ndarray:
    """Copy (or, for embedded data, write) the image to `target`; returns it decoded, (H, W, 3) RGB."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if record.image_data and not source.is_file():
        try:
            target.write_bytes(base64.b64decode(record.image_data, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ImageError(
                f"{record.origin}: imageData is not base64 ({exc}); save the file again in LabelMe",
                reason="unreadable image",
            ) from exc
        source = target
    image = read_rgb(source, origin=record.origin, max_pixels=max_pixels)
    if source != target:
        shutil.copyfile(source, target)
    return image


def _check_coordinates(region: Region) -> None:
    """Refuse a coordinate that is not a number or lies beyond `_MAX_COORDINATE` (it would overflow rasterize)."""
    named = [(f"points[{i}]", v) for i, point in enumerate(region.points) for v in point]
    named += [(key, v) for key, v in region.geometry.items() if key not in ("counts", "size")]
    for key, value in named:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and abs(value) <= _MAX_COORDINATE):
            raise AnnotationError(
                f"{region.origin}: {key} of the {region.shape} is {value!r}, not a coordinate within "
                f"±{_MAX_COORDINATE:.0e} px; fix or delete the region in the annotation tool",
                reason="bad geometry",
            )


def _check_region(region: Region, filename: str, height: int, width: int, drops: Drops, clipped: list[str]) -> bool:
    """Whether to keep `region` of a `width` x `height` image; drops and counts the rest."""
    try:
        _check_coordinates(region)
    except AnnotationError as exc:
        drops.bad(exc)
        return False
    if region.shape == "mask":
        if list(region.geometry["size"]) != [height, width]:
            drops.bad(
                AnnotationError(
                    f"{region.origin}: RLE size {region.geometry['size']} is not the size [height, "
                    f"width] = [{height}, {width}] of {filename}; export the annotation again",
                    reason="RLE size mismatch",
                )
            )
            return False
        return True
    x0, y0, x1, y1 = region.bounds() or (0, 0, 0, 0)
    if x1 < -_SLACK or y1 < -_SLACK or x0 > width - 1 + _SLACK or y0 > height - 1 + _SLACK:
        drops.note(
            "outside the image",
            f"{region.origin}: the {region.shape} lies wholly outside the {width}x{height} image {filename}; dropped",
        )
        return False
    if x0 < -_SLACK or y0 < -_SLACK or x1 > width - 1 + _SLACK or y1 > height - 1 + _SLACK:
        clipped.append(f"{region.origin}: the {region.shape} extends past the {width}x{height} image")
    return True


def _check_default_label(params: Params) -> None:
    """Refuse a ``fetch.default_label`` that is no class (nor maps to one)."""
    default, classes = params.fetch.default_label, params.classes
    if default is not None and classes.names != AUTO and classes.class_of(default) not in [*classes.names, IGNORE]:
        raise ConfigError(
            f"fetch.default_label is {default!r}, not a class; choose one of classes.names {classes.names} "
            f"or {IGNORE!r}, or map it with classes.label_map"
        )


def _default_label(region: Region, params: Params, drops: Drops, unlabeled: list[str]) -> Region | None:
    """`region`, given ``fetch.default_label`` if it carries no label; None if dropped."""
    if region.label:
        return region
    if params.fetch.default_label is None:
        drops.bad(
            AnnotationError(
                f"{region.origin}: the region has no label; set fetch.default_label in params.yaml to the "
                f"class of unlabeled regions, one of classes.names {params.classes.names} (or {IGNORE!r}), or "
                "fetch.label_key if a VIA region attribute other than that holds the labels",
                reason="no label",
            )
        )
        return None
    unlabeled.append(region.origin)
    return replace(region, label=params.fetch.default_label)


def _map_label(region: Region, params: Params) -> Region:
    """`region` with its label mapped to a class name or "ignore"."""
    names = params.classes.names
    name = params.classes.class_of(region.label)
    if name not in names and name != IGNORE:
        raise AnnotationError(
            f"{region.origin}: label {region.label!r} is not a class; classes are {names}. "
            "Add it to classes.names, or map it with classes.label_map in params.yaml "
            "(to a class, or to ignore; the key '*' catches every other label)",
            reason="unknown label",
        )
    return replace(region, label=name)


def _snapshot(
    records: list[ImageAnnotation], root: Path, staging: Path, params: Params, drops: Drops
) -> tuple[list[ImageAnnotation], list[ManifestFile], list[str], list[str]]:
    """Copy each (canonically named) record's image into `staging`.

    Returns:
        The kept records, their file entries, clipped regions and regions given the default label.
    """
    kept, files, clipped, unlabeled = [], [], [], []
    for record in records:
        name = record.filename  # the image's path inside the source (segflow.data.collect)
        target = staging / "images" / name
        try:
            image = _copy_image(root.resolve() / name, record, target, params.fetch.max_pixels)
        except SegflowError as exc:
            drops.bad(exc)
            continue
        height, width = image.shape[:2]
        labelled = (_default_label(region, params, drops, unlabeled) for region in record.regions)
        regions = tuple(
            _map_label(region, params)
            for region in labelled
            if region is not None and _check_region(region, name, height, width, drops, clipped)
        )
        kept.append(replace(record, filename=name, regions=regions, image_data=""))
        files.append(
            ManifestFile(
                filename=name,
                width=width,
                height=height,
                regions=len(regions),
                sha256=file_sha256(target),
                phash=perceptual_hash(image),
            )
        )
    return kept, files, clipped, unlabeled


def _warn_uncovered(root: Path, collected: Collected, drops: Drops) -> None:
    """Log the images no annotation file names (left out), with the fix."""
    uncovered = collected.uncovered
    if not uncovered:
        return
    shown = ", ".join(uncovered[:_SHOWN]) + (f" and {len(uncovered) - _SHOWN} more" if len(uncovered) > _SHOWN else "")
    if collected.unread:
        everything = [*collected.files, *collected.unread]
        glob = f"*/{Path(collected.unread[0]).name}"
        fix = f"set fetch.annotations to {everything} (or a glob such as {[glob]}) to read them too"
    else:
        fix = "add the annotation file that names them to fetch.annotations (a list or glob)"
    dropped = " (or whose records were dropped, see the report)" if drops.counts else ""
    log.warning(
        "%d images in %s are named by no annotation file read%s, so they are left out: %s; %s, "
        "or remove the images from the source",
        len(uncovered),
        root,
        dropped,
        shown,
        fix,
    )


def fetch(params: Params, out_dir: Path, cache_dir: Path | None = None) -> Manifest:
    """Materialise the source named in `params.fetch`, validate it, write the snapshot.

    Args:
        out_dir: the snapshot folder to write.
        cache_dir: where downloads and extracted archives are kept between runs;
            None = a temporary folder, removed afterwards.

    Returns:
        The manifest, as written to ``manifest.json``.

    Raises:
        SegflowError: a missing or unreadable source, a bad record (unless skipped) or an
            unknown label; `out_dir` is then left absent.
    """
    settings = params.fetch
    drops = Drops(strict=settings.bad_records == "fail")
    with atomic_dir(out_dir) as staging, _cache(cache_dir, out_dir) as cache:
        _check_default_label(params)
        root = materialise(settings, cache)
        collected = collect(root, settings, drops, masks=mask_rules(params))
        auto = params.classes.names == AUTO
        params, unused = resolve_classes(params, root, collected)  # names: auto -> the classes found
        _warn_uncovered(root, collected, drops)
        kept, files, clipped, unlabeled = _snapshot(collected.records, root, staging, params, drops)
        if not kept:
            raise AnnotationError(f"{root}: {collected.files}: no usable annotated images; nothing to train on")
        write_annotations(kept, staging / "annotations.json")
        write_classes(params.classes.names, staging / CLASSES_FILE, found=auto)
        # One format, or several joined by "+" (a list of files of different formats).
        fmt = "+".join(dict.fromkeys(collected.formats))
        extra = {"unlabeled": unlabeled, "merged": collected.merged, "default_label": settings.default_label}
        extra |= {"unused_labels": unused, "unused_as": settings.unused_labels if auto else "typed"}
        extra |= {"uncovered": collected.uncovered, "unread": collected.unread}
        extra["near_duplicates"] = near = near_duplicate_pairs(files, settings.near_duplicate_distance)
        names = params.classes.names
        report = fetch_report(kept, names, files, drops.as_dict(), clipped, fmt, settings.source, **extra)
        write_report(report, staging)
        manifest = Manifest(
            source=settings.source,
            annotation_file=str(root / collected.files[0]),
            annotation_files=collected.files,
            format=fmt,
            images=len(kept),
            regions=report.regions,
            regions_per_class={name: report.classes[name].instances for name in params.classes.names},
            images_without_regions=report.images_without_regions.count,
            files=files,
            near_duplicates=near,
        )
        write_manifest(manifest, staging)
    return manifest
