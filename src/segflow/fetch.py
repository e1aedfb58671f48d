"""The fetch stage: a source of annotated photos -> a validated, normalised snapshot.

The snapshot folder holds ``images/`` (the annotated images, copied), one canonical
``annotations.json`` (see `segflow.records`) whose labels are already mapped to class
names, and ``manifest.json`` (counts and sha256 of every image). Nothing downstream
reads the source again.
"""
from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

from segflow.config import Params
from segflow.errors import AnnotationError
from segflow.images import read_rgb
from segflow.outputs import atomic_dir, file_sha256
from segflow.readers import read_annotation_file
from segflow.records import FILLABLE_SHAPES, ImageAnnotation, write_annotations

__all__ = ["fetch"]

log = logging.getLogger(__name__)


def _map_labels(image: ImageAnnotation, params: Params, skipped: Counter) -> ImageAnnotation:
    """Map labels to class names and drop regions that enclose no area."""
    names = params.classes.names
    kept = []
    for region in image.regions:
        name = params.classes.class_of(region.label)
        if name not in names:
            raise AnnotationError(
                f"{region.origin}: label {region.label!r} is not a class; classes are {names}. "
                "Add it to classes.names, or map it with classes.label_map in params.yaml"
            )
        if region.shape not in FILLABLE_SHAPES:
            # A polyline or point has no inside to paint; it is reported, not fatal.
            log.warning("%s: %s encloses no area; skipped", region.origin, region.shape)
            skipped[region.shape] += 1
            continue
        kept.append(replace(region, label=name))
    return replace(image, regions=tuple(kept))


def fetch(params: Params, out_dir: Path) -> dict:
    """Validate the source named in `params.fetch` and write the snapshot to `out_dir`.

    Returns:
        The manifest (also written as ``manifest.json``).

    Raises:
        SegflowError: a missing or unreadable file, a bad record or an unknown label;
            `out_dir` is then left absent.
    """
    source = params.fetch.source
    annotation_file = source / params.fetch.annotations
    if not annotation_file.is_file():
        raise AnnotationError(
            f"{annotation_file}: annotation file not found; set fetch.source and "
            "fetch.annotations in params.yaml (did you run `dvc pull`?)"
        )
    records = read_annotation_file(annotation_file, params.fetch.format, params.fetch.label_key)
    if not records:
        raise AnnotationError(f"{annotation_file}: no images annotated; nothing to train on")
    image_root = annotation_file.parent
    skipped: Counter = Counter()
    manifest_images = []
    with atomic_dir(out_dir) as staging:
        mapped = []
        for record in records:
            image_path = image_root / record.filename
            height, width = read_rgb(image_path, origin=record.origin).shape[:2]
            mapped.append(_map_labels(record, params, skipped))
            target = staging / "images" / record.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image_path, target)
            manifest_images.append(
                {
                    "filename": record.filename,
                    "width": width,
                    "height": height,
                    "regions": len(mapped[-1].regions),
                    "sha256": file_sha256(target),
                }
            )
        write_annotations(mapped, staging / "annotations.json")
        regions_per_class = Counter(r.label for image in mapped for r in image.regions)
        manifest = {
            "source": str(source),
            "annotation_file": str(annotation_file),
            "images": len(mapped),
            "regions": sum(regions_per_class.values()),
            "regions_per_class": {name: regions_per_class[name] for name in params.classes.names},
            "images_without_regions": sum(1 for image in mapped if not image.regions),
            "skipped_regions": dict(skipped),
            "files": manifest_images,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest
