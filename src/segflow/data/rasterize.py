"""The rasterize stage: canonical regions -> single-channel class-index PNG masks.

Rules (documented in the README too):

* Regions are painted in the order the annotation file lists them, so a later region
  covers an earlier one where they overlap (as they appear stacked in the tool); with
  ``rasterize.order: area``, largest first, so small shapes inside big ones stay visible.
* Pixels that no region covers get `Params.unlabeled_value`: a class (usually
  background) or the ignore index, chosen by ``rasterize.unlabeled``. Regions labelled
  ``ignore`` (``classes.label_map``) are painted with the ignore index.
* Which pixels a shape covers follows ``rasterize.fill`` (see `segflow.data.draw`): OpenCV's
  fill, or PIL's, which reproduces Cityscapes' and LabelMe's own converters. Parts
  outside the image are clipped.
* Polylines that trace an outline (closed, or ends within max(3 px, 5% of the length))
  are filled as polygons with ``rasterize.fill_outlines``. Other polylines and points are
  drawn only with ``rasterize.polyline_width`` / ``point_radius`` above 0; otherwise they
  are skipped and counted in the report.
* A region wholly covered by other classes painted after it (its class on none of its
  pixels: a digit listed before the coin it sits on, at the same CVAT z_order) is logged
  per class with the fix, and the report counts it as ``hidden``, not among the class's
  instances and images (see `segflow.data.report`).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from segflow.config import Params
from segflow.data.draw import DrawRules, drawable, hidden_regions, is_outline, paint_region, rasterize_image
from segflow.data.drops import Drops
from segflow.data.manifest import read_manifest
from segflow.data.readers import READERS
from segflow.data.records import ImageAnnotation, Region, read_annotations
from segflow.data.report import add_pixels, read_report, write_report
from segflow.errors import AnnotationError
from segflow.outputs import atomic_dir

__all__ = ["mask_name", "draw_rules", "paint_region", "rasterize_image", "rasterize"]

log = logging.getLogger(__name__)

# Hidden regions kept as examples per class.
_EXAMPLES = 5


def mask_name(filename: str) -> str:
    """Mask file name (relative) for an image file name: same path, ``.png``."""
    return str(Path(filename).with_suffix(".png"))


def draw_rules(params: Params, fmt: str) -> DrawRules:
    """The drawing rules for annotations read as `fmt`, from ``rasterize`` params."""
    settings = params.rasterize
    fill = settings.fill
    if fill == "auto":  # several formats (a list of files) are joined by "+": pil only if all are
        pil = {reader.name for reader in READERS if reader.pil_fill}  # formats whose tools draw with PIL
        fill = "pil" if all(part in pil for part in fmt.split("+")) else "opencv"
    return DrawRules(
        fill=fill,
        polyline_width=settings.polyline_width,
        point_radius=settings.point_radius,
        fill_outlines=settings.fill_outlines,
        order=settings.order,
    )


def _count_hidden(
    image: ImageAnnotation, covered: list[Region], hidden: dict[str, Counter[str]], examples: dict[str, list[str]]
) -> None:
    """Add `image`'s wholly `covered` regions to the counts per class (regions, and images
    where the class has no visible region left) and keep a few examples."""
    if not covered:
        return
    lost = Counter(region.label for region in covered)
    everything = Counter(region.label for region in image.regions)
    for label, count in lost.items():
        hidden["regions"][label] += count
        hidden["images"][label] += count == everything[label]
        kept = examples.setdefault(label, [])
        kept += [region.origin for region in covered if region.label == label][: _EXAMPLES - len(kept)]


def _warn_hidden(name: str, count: int, examples: list[str], order: str) -> None:
    if order == "file":
        why = "painted in file order (CVAT: within one z_order), a later region covers them"
        fix = "set rasterize.order: area to paint larger regions first, so small ones inside stay visible"
    else:
        why = "regions of other classes on a higher z_order, or of equal or larger area listed later, cover them"
        fix = "raise their z_order in the tool, or fix the covering regions"
    log.warning(
        "%d regions of class %r are wholly hidden (their class on none of their pixels): %s; e.g. %s; %s",
        count,
        name,
        why,
        "; ".join(examples[:3]),
        fix,
    )


def _note_undrawable(image: ImageAnnotation, rules: DrawRules, skipped: Drops) -> int:
    """Note in `skipped` each region of `image` that has no area to draw (with the key that
    would draw it); returns how many of its polylines trace an outline (filled as polygons)."""
    outlines = 0
    for region in image.regions:
        outlines += rules.fill_outlines and is_outline(region)
        if not drawable(region, rules):
            option = "polyline_width" if region.shape == "polyline" else "point_radius"
            why = " (its ends do not meet, so fill_outlines does not fill it)" * (region.shape == "polyline")
            skipped.note(
                f"{region.shape} not drawn",
                f"{region.origin}: a {region.shape} has no area{why}; skipped (set rasterize.{option} to draw it)",
            )
    return outlines


def rasterize(params: Params, fetch_dir: Path, out_dir: Path, report_dir: Path | None = None) -> dict[str, int]:
    """Write one mask PNG per image of the fetch snapshot into `out_dir`.

    Args:
        report_dir: if given, the fetch report with pixel counts added is written there
            (``report.json`` and ``class_pixels.png``).

    Returns:
        Pixel count per class (and ``"ignore"``) over all masks.
    """
    images = read_annotations(fetch_dir / "annotations.json")
    # The fetch manifest already holds every image's size: no need to decode them again.
    manifest = read_manifest(fetch_dir)
    sizes = {entry.filename: (entry.height, entry.width) for entry in manifest.files}
    rules = draw_rules(params, manifest.format)
    names, ignore = params.classes.names, params.classes.ignore_index
    skipped = Drops(strict=False)
    counts = np.zeros(256, dtype=np.int64)
    outlines = 0
    hidden: dict[str, Counter[str]] = {"regions": Counter(), "images": Counter()}
    examples: dict[str, list[str]] = {}
    with atomic_dir(out_dir) as staging:
        for image in tqdm(images, desc=f"rasterize ({rules.fill})", unit="img"):
            outlines += _note_undrawable(image, rules, skipped)
            height, width = sizes[image.filename]
            mask = rasterize_image(
                image, height, width, names, params.unlabeled_value, ignore_index=ignore, rules=rules
            )
            covered = hidden_regions(image, mask, names, ignore_index=ignore, rules=rules)
            _count_hidden(image, covered, hidden, examples)
            target = staging / mask_name(image.filename)
            if target.exists():
                raise AnnotationError(
                    f"{image.origin}: two images share the mask name {target.name}; rename one "
                    "(masks are named after the image without its extension)"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), mask)
            counts += np.bincount(mask.ravel(), minlength=256)
    if outlines:
        log.info("%d polylines trace an outline: filled as polygons (rasterize.fill_outlines)", outlines)
    for name, count in sorted(hidden["regions"].items()):
        _warn_hidden(name, count, examples[name], rules.order)
    pixels = {name: int(counts[index]) for index, name in enumerate(names)}
    pixels["ignore"] = int(counts[ignore])
    if report_dir is not None:
        report = read_report(fetch_dir)
        with atomic_dir(report_dir) as folder:
            hidden_report = {
                **{key: dict(sorted(count.items())) for key, count in hidden.items()},
                "examples": examples,
            }
            write_report(add_pixels(report, pixels, skipped.as_dict(), hidden_report), folder)
    return pixels
