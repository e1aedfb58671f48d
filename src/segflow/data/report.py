"""The dataset report: what the fetch and rasterize stages found in the data.

Fetch writes ``report.json`` into its snapshot; rasterize adds the pixels each class
covers and writes the full report, with a bar chart of pixel shares
(``class_pixels.png``), into the report folder. Keys of ``report.json``:

* ``format``, ``source``: the reader used and where the data came from;
* ``images``, ``regions``: how many were kept;
* ``classes``: per class (and ``ignore``): ``images`` holding it, ``instances``
  (regions) and, after rasterize, ``pixels`` and ``pixel_share``;
* ``images_without_regions``: a count and the first few names;
* ``dropped``: per reason, how many records were dropped and example messages naming
  file and record (bad records when ``fetch.bad_records: skip``, polygons wholly
  outside their image, polylines and points not drawn, ...);
* ``unreadable_files``: how many of the drops were missing or undecodable images and
  unreadable annotation files;
* ``clipped``: regions partly outside their image (kept; the outside part is lost);
* ``duplicate_images``: groups of images with identical bytes (by sha256);
* ``near_duplicates``: pairs of different files that look alike (re-encoded, resized),
  ``{"images": [a, b], "distance": d}``, d = pHash bits apart, at most
  ``fetch.near_duplicate_distance`` (see `segflow.data.near_duplicates`);
* ``unlabeled_regions``: regions that carried no label, the class they were given
  (``fetch.default_label``), a count and the first few;
* ``merged_images``: images named in several annotation files, whose regions were joined;
* ``folder_splits``: images per split named by their folders (or the reader), "" = none;
* ``unused_labels``: labels the files declare but no region uses, and image-level tags
  (see `segflow.data.found_classes`): ``labels``, ``count`` and ``as`` ("report": not
  classes; "class": made classes, by ``fetch.unused_labels``; "typed": classes.names is
  typed, so they are only listed);
* ``uncovered_images``: image files in the source that no annotation file read names
  (left out): a count, the first few, and ``unread_annotations``, files beside them
  named like an annotation file read (``val/via_region_data.json``) that were not read;
* after rasterize, ``hidden_regions``: per class, regions wholly covered by other
  classes painted after them (their class on none of their pixels), with examples; each class's ``instances``
  and ``images`` then count only regions with a visible pixel, and its ``hidden``
  the others.

Preprocess adds the duplicates that cross the train/val/test split to its own output.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field
from rich.table import Table

from segflow.config import IGNORE
from segflow.data.manifest import ManifestFile, NearDuplicate
from segflow.data.records import ImageAnnotation
from segflow.outputs import Contract, read_contract, write_contract

__all__ = [
    "UNREADABLE_REASONS",
    "REPORT",
    "ClassCounts",
    "Examples",
    "ReasonCounts",
    "DatasetReport",
    "fetch_report",
    "add_pixels",
    "read_report",
    "write_report",
    "report_table",
]

#: Drop reasons that count as unreadable files.
UNREADABLE_REASONS = ("missing image", "unreadable image", "unreadable file")
_EXAMPLES = 5
REPORT = "report.json"


class ClassCounts(Contract):
    """One class's images and regions; after rasterize, its hidden regions and pixels."""

    images: int
    instances: int
    hidden: int | None = None
    pixels: int | None = None
    pixel_share: float | None = None


class Examples(Contract):
    """How many, and the first few."""

    count: int
    examples: list[str]


class ReasonCounts(Contract):
    """Per reason (a drop's, or a class's for hidden regions): how many, and example messages."""

    counts: dict[str, int]
    examples: dict[str, list[str]]


class UnlabeledRegions(Contract):
    """Regions without a label, given ``fetch.default_label`` (``class``)."""

    count: int
    class_: str | None = Field(alias="class")
    examples: list[str]


class UnusedLabels(Contract):
    """Labels declared but on no region, and ``as`` what they were taken (module docstring)."""

    count: int
    labels: list[str]
    labels_as: str = Field(alias="as")


class UncoveredImages(Examples):
    unread_annotations: list[str]


class DatasetReport(Contract):
    """``report.json`` (see the module docstring for each key); ``hidden_regions`` and each
    class's ``hidden``, ``pixels`` and ``pixel_share`` only after rasterize."""

    format: str
    source: str
    images: int
    regions: int
    classes: dict[str, ClassCounts]
    images_without_regions: Examples
    dropped: ReasonCounts
    unreadable_files: int
    clipped: Examples
    duplicate_images: list[list[str]]
    near_duplicates: list[NearDuplicate]
    unlabeled_regions: UnlabeledRegions
    merged_images: Examples
    folder_splits: dict[str, int]
    unused_labels: UnusedLabels
    uncovered_images: UncoveredImages
    hidden_regions: ReasonCounts | None = None


def fetch_report(
    records: list[ImageAnnotation],
    class_names: list[str],
    files: list[ManifestFile],
    dropped: dict[str, dict],
    clipped: list[str],
    fmt: str,
    source: str,
    *,
    unlabeled: Sequence[str] = (),
    default_label: str | None = None,
    merged: Sequence[str] = (),
    near_duplicates: Sequence[NearDuplicate] = (),
    unused_labels: Sequence[str] = (),
    unused_as: str = "report",
    uncovered: Sequence[str] = (),
    unread: Sequence[str] = (),
) -> DatasetReport:
    """The fetch part of the report, from the kept (label-mapped) records and their files.

    `unlabeled` names the regions given `default_label`; `merged` the images whose regions
    came from several annotation files; `near_duplicates` the pairs of similar images;
    `unused_labels` the labels declared but on no region (made classes if `unused_as` is
    "class"); `uncovered` the images no annotation file names, `unread` the annotation
    files found beside them.
    """
    instances = Counter(region.label for record in records for region in record.regions)
    images = Counter(label for record in records for label in {r.label for r in record.regions})
    empty = [record.filename for record in records if not record.regions]
    by_hash: dict[str, list[str]] = {}
    for entry in files:
        by_hash.setdefault(entry.sha256, []).append(entry.filename)
    report = {
        "format": fmt,
        "source": source,
        "images": len(records),
        "regions": sum(instances.values()),
        "classes": {name: {"images": images[name], "instances": instances[name]} for name in [*class_names, IGNORE]},
        "images_without_regions": {"count": len(empty), "examples": empty[:_EXAMPLES]},
        "dropped": dropped,
        "unreadable_files": sum(dropped["counts"].get(reason, 0) for reason in UNREADABLE_REASONS),
        "clipped": {"count": len(clipped), "examples": clipped[:_EXAMPLES]},
        "duplicate_images": [sorted(names) for names in by_hash.values() if len(names) > 1],
        "near_duplicates": list(near_duplicates),
        "unlabeled_regions": {"count": len(unlabeled), "class": default_label, "examples": list(unlabeled[:_EXAMPLES])},
        "merged_images": {"count": len(merged), "examples": list(merged[:_EXAMPLES])},
        "folder_splits": dict(sorted(Counter(record.split for record in records).items())),
        "unused_labels": {"count": len(unused_labels), "labels": list(unused_labels), "as": unused_as},
        "uncovered_images": {
            "count": len(uncovered),
            "examples": list(uncovered[:_EXAMPLES]),
            "unread_annotations": list(unread),
        },
    }
    return DatasetReport.model_validate(report)


def add_pixels(
    report: DatasetReport, pixels: dict[str, int], dropped: dict[str, dict], hidden: dict[str, Any] | None = None
) -> DatasetReport:
    """The report with rasterize's pixel counts per class and its own drops added.

    `hidden`: regions wholly covered by later ones, ``{"regions": {class: n}, "images":
    {class: images left with none of it visible}, "examples": {class: [origin, ...]}}``;
    they leave the class's ``instances`` and ``images`` for its ``hidden`` count.
    """
    hidden = hidden or {}
    fetched = report.model_dump(mode="json", by_alias=True, exclude_unset=True)
    regions, images = Counter(hidden.get("regions", {})), Counter(hidden.get("images", {}))
    total = sum(pixels.values()) or 1
    classes = {
        name: {
            **counts,
            "images": counts["images"] - images[name],
            "instances": counts["instances"] - regions[name],
            "hidden": regions[name],
            "pixels": pixels.get(name, 0),
            "pixel_share": pixels.get(name, 0) / total,
        }
        for name, counts in fetched["classes"].items()
    }
    counts = Counter(fetched["dropped"]["counts"]) + Counter(dropped["counts"])
    examples = {**fetched["dropped"]["examples"], **dropped["examples"]}
    merged = {"counts": dict(sorted(counts.items())), "examples": dict(sorted(examples.items()))}
    hidden_regions = {
        "counts": dict(sorted(regions.items())),
        "examples": dict(sorted(hidden.get("examples", {}).items())),
    }
    return DatasetReport.model_validate(
        {**fetched, "classes": classes, "dropped": merged, "hidden_regions": hidden_regions}
    )


def _chart(report: DatasetReport, path: Path) -> None:
    """A horizontal bar chart of each class's share of the pixels."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    names = list(report.classes)
    shares = [100 * report.classes[name].pixel_share for name in names]
    figure, axes = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2))
    bars = axes.barh(names[::-1], shares[::-1], color="#4878a8")
    axes.bar_label(bars, fmt="%.1f%%", fontsize=8, padding=2)
    axes.set_xlabel("share of all mask pixels (%)")
    axes.set_title(f"pixels per class, {report.images} images")
    axes.set_xlim(0, max(shares + [1]) * 1.2)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_report(report: DatasetReport, folder: Path) -> None:
    """Write ``report.json`` into `folder`, and ``class_pixels.png`` once pixels are counted."""
    folder.mkdir(parents=True, exist_ok=True)
    write_contract(report, folder / REPORT)
    if all(counts.pixels is not None for counts in report.classes.values()):
        _chart(report, folder / "class_pixels.png")


def read_report(folder: Path) -> DatasetReport:
    """The ``report.json`` in `folder` (the fetch snapshot, or rasterize's report folder)."""
    return read_contract(DatasetReport, Path(folder) / REPORT)


def _unused_note(unused: UnusedLabels) -> str:
    """The table's line for the unused labels, naming the first few."""
    what = {"report": "not classes", "class": "made empty classes"}.get(unused.labels_as, "")
    labels = unused.labels
    shown = ", ".join(labels[:_EXAMPLES]) + (", ..." if len(labels) > _EXAMPLES else "")
    return f"labels on no region{f' ({what})' if what else ''}: {shown}"


def report_table(report: DatasetReport) -> Table:
    """A short table for the terminal: classes, then what was dropped, clipped, duplicated."""
    table = Table(title=f"dataset: {report.images} images, {report.regions} regions ({report.format})")
    for column in ("class", "images", "instances", "pixels"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, counts in report.classes.items():
        share = "-" if counts.pixel_share is None else f"{counts.pixel_share:.1%}"
        table.add_row(name, str(counts.images), str(counts.instances), share)
    hidden = report.hidden_regions.counts if report.hidden_regions else {}
    notes = {
        "images without regions": report.images_without_regions.count,
        "unreadable files": report.unreadable_files,
        "clipped to the image": report.clipped.count,
        "duplicate images": sum(len(group) for group in report.duplicate_images),
        "near-duplicate pairs": len(report.near_duplicates),
        f"unlabeled regions -> {report.unlabeled_regions.class_}": report.unlabeled_regions.count,
        "images joined from several files": report.merged_images.count,
        "images in no annotation file (left out)": report.uncovered_images.count,
        _unused_note(report.unused_labels): report.unused_labels.count,
        **{f"hidden regions: {name}": n for name, n in hidden.items()},
        **{f"dropped: {reason}": count for reason, count in report.dropped.counts.items()},
    }
    for note, count in notes.items():
        if count:
            table.add_row(f"[yellow]{note}[/]", "", str(count), "")
    return table
