"""params.yaml sections of the data stages: classes, fetch, rasterize, preprocess."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from segflow.config.base import IGNORE, Section

__all__ = [
    "AUTO",
    "AnnotationFormat",
    "CrowdRule",
    "ClassesParams",
    "FetchParams",
    "RasterizeParams",
    "PreprocessParams",
]

#: `fetch.format`: "auto" (detect) or the name of a reader in segflow.data.readers.READERS.
#: Spelled out here because config may not import data; tests/data/test_readers.py checks that
#: the two agree, and segflow.data.readers.FORMATS is this tuple.
AnnotationFormat = Literal[
    "auto", "via_csv", "via_json", "coco", "labelme", "cityscapes", "cvat", "masks", "mask_images", "label_studio"
]
#: `fetch.coco_crowd`: COCO crowd annotations paint their category, or the ignore index.
CrowdRule = Literal["class", "ignore"]


#: `classes.names` that asks fetch to find the classes (see segflow.config.auto_classes).
AUTO = "auto"


class ClassesParams(Section):
    #: Class names; a class's index in this list is its value in the masks. "auto":
    #: background plus every class the annotations name, sorted, found by fetch.
    names: list[str] | Literal["auto"]
    #: Annotation label -> class name, or "ignore" (also null) to paint it with
    #: ignore_index; the key "*" catches every label that is neither listed nor a class.
    label_map: dict[str, str | None] = {}
    #: "cityscapes" fills names, label_map and palette from cityscapesscripts' label
    #: table: the 19 trainId classes, every other label -> ignore (label_map entries
    #: given here override). "none": list the classes yourself.
    preset: Literal["none", "cityscapes"] = "none"
    #: Mask value for pixels that the loss and the metrics skip (padding, "ignore").
    ignore_index: int = Field(255, ge=0, le=255)
    #: Colours for pictures: {class name: [r, g, b]} (classes it does not name get a default
    #: colour, names that are not classes are unused, so it survives a changed class list or
    #: names: auto), or a list of one [r, g, b] per class in the order of names; empty = defaults.
    palette: dict[str, tuple[int, int, int]] | list[tuple[int, int, int]] = []

    def colours(self, names: list[str] | None = None) -> list[tuple[int, int, int]]:
        """One RGB colour per class of `names` (default: ``self.names``), resolved from the
        palette: a list as typed, a mapping by name with defaults for the classes it omits."""
        from segflow.colours import palette as default_palette

        names = list(self.names if names is None else names)
        if isinstance(self.palette, list):
            return list(self.palette) if self.palette else [tuple(c) for c in default_palette(len(names)).tolist()]
        defaults = default_palette(len(names)).tolist()
        return [tuple(self.palette.get(name, defaults[i])) for i, name in enumerate(names)]

    @model_validator(mode="before")
    @classmethod
    def _expand_preset(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or raw.get("preset") != "cityscapes":
            return raw
        if raw.get("names"):
            raise ValueError("preset 'cityscapes' fills names: remove names, or the preset")
        from segflow.cityscapes_labels import preset  # imports cityscapesscripts' label table

        table = preset()
        label_map = {**table["label_map"], **(raw.get("label_map") or {})}
        return {
            **raw,
            "names": table["names"],
            "label_map": label_map,
            "palette": raw.get("palette") or table["palette"],
        }

    @field_validator("names")
    @classmethod
    def _unique(cls, names: list[str] | str) -> list[str] | str:
        if names == AUTO:
            return names
        if len(names) < 2:
            raise ValueError(f"name at least 2 classes (background and one more), or write {AUTO!r}")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"class names must be unique; repeated: {duplicates}")
        if IGNORE in names:
            raise ValueError(f"{IGNORE!r} is reserved (it paints ignore_index); rename that class")
        return names

    @field_validator("label_map")
    @classmethod
    def _null_is_ignore(cls, label_map: dict[str, str | None]) -> dict[str, str]:
        return {label: IGNORE if target is None else target for label, target in label_map.items()}

    @model_validator(mode="after")
    def _consistent(self) -> ClassesParams:
        if self.names == AUTO:
            return self  # checked when fetch has found the names
        unknown = sorted(set(self.label_map.values()) - set(self.names) - {IGNORE})
        if unknown:
            raise ValueError(f"label_map maps to {unknown}, which are not in names {self.names}")
        if isinstance(self.palette, list) and self.palette and len(self.palette) != len(self.names):
            raise ValueError(
                f"palette has {len(self.palette)} colours for {len(self.names)} classes; give one "
                "[r, g, b] per class, map names to colours ({class: [r, g, b]}), or leave it empty"
            )
        given = self.palette.values() if isinstance(self.palette, dict) else self.palette
        if any(not 0 <= c <= 255 for colour in given for c in colour):
            raise ValueError("palette colours are [r, g, b] with values 0..255")
        if self.ignore_index < len(self.names):
            raise ValueError(
                f"ignore_index {self.ignore_index} is a class index (there are {len(self.names)} "
                "classes); use a value >= the number of classes, e.g. 255"
            )
        return self

    def class_of(self, label: str) -> str:
        """The class name (or "ignore") a label maps to; may be outside `names` if unmapped.

        An explicit label_map entry wins, then a label that is a class name, then "*".
        """
        if label in self.label_map:
            return self.label_map[label]
        return label if label in self.names and self.names != AUTO else self.label_map.get("*", label)

    def auto_names(self, labels: Iterable[str]) -> list[str]:
        """``background`` plus the classes `labels` map to (ignore left out), sorted: names "auto"."""
        found = {self.class_of(label) for label in labels if label} - {IGNORE, "background"}
        return ["background", *sorted(found)]


class FetchParams(Section):
    #: Where the photos come from: "data" (the DVC-tracked folder), another folder, a
    #: .zip/.tar.gz/.tar archive, an http(s) URL of an archive (needs sha256), or
    #: "cityscapes" (downloads cityscapes_packages; credentials from the environment,
    #: CITYSCAPES_USERNAME and CITYSCAPES_PASSWORD).
    source: str = "data"
    #: sha256 of the archive: required for a URL, checked for a local archive if set.
    sha256: str | None = None
    #: Packages to download when source is "cityscapes" (names as on the website).
    cityscapes_packages: list[str] = ["gtFine_trainvaltest.zip", "leftImg8bit_trainvaltest.zip"]
    #: Annotation file, or folder (Cityscapes, LabelMe), inside the source; or a list of
    #: files and glob patterns (``*/via_region_data.json``), read in order, each file's
    #: image names relative to its own folder (an image in two files gets both's regions).
    annotations: Path | list[Path] = Path("via_region_data.csv")
    #: Folder the annotations' image names are relative to, inside the source;
    #: null = the annotation file's folder (or the annotation folder itself).
    images: Path | None = None
    #: Reader; `auto` detects it (see segflow.data.readers).
    format: AnnotationFormat = "auto"
    #: VIA region_attributes key that holds the label (VIA users name it freely).
    label_key: str = "label"
    #: Class (or "ignore") of regions that carry no label (VIA's empty region_attributes:
    #: one-class datasets often have none); null = such a region is an error.
    default_label: str | None = None
    #: COCO iscrowd annotations: "class" paints their category, "ignore" the ignore index.
    coco_crowd: CrowdRule = "class"
    #: Mask-image datasets (fetch.annotations names the masks folder): a mask's file stem is
    #: its image's stem less image_suffix, plus mask_suffix (``_mask``, ``_gtFine_labelIds``);
    #: with a suffix set, only the files ending so are masks (others beside them are not read).
    mask_suffix: str = ""
    image_suffix: str = ""
    #: What a mask's value (or palette index) means: "index" (its index in classes.names;
    #: ignore_index, and 255 in palette PNGs, VOC's border, are ignore), "cityscapes" (a
    #: Cityscapes label id, as in ``*_gtFine_labelIds.png``), {value: class or "ignore"},
    #: or "auto": cityscapes under classes.preset cityscapes, else index.
    value_map: Literal["auto", "index", "cityscapes"] | dict[int, str] = "auto"
    #: RGB colour masks: {"r,g,b": class or "ignore"}; {} = classes.palette's colours.
    colour_map: dict[str, str] = {}
    #: Two different images whose perceptual hashes (64-bit pHash) differ in at most this
    #: many bits are near duplicates (a re-encoded or resized copy: 0-4; unrelated photos:
    #: ~32), listed in the report; preprocess.near_duplicates decides what else happens.
    near_duplicate_distance: int = Field(4, ge=0, le=64)
    #: A bad record (malformed region, unknown shape, missing or unreadable image, RLE of
    #: the wrong size): "fail" stops the stage; "skip" drops it and counts it in the report.
    bad_records: Literal["fail", "skip"] = "fail"
    #: Labels a file declares but no region uses (CVAT <meta> labels, labelmap.txt, COCO
    #: categories) and image-level tags (Label Studio choices) paint nothing: with
    #: classes.names auto, "report" lists them in the report and leaves them out of the
    #: classes (a class with no pixel cannot be learned or scored); "class" makes them classes.
    unused_labels: Literal["report", "class"] = "report"
    #: Decompression-bomb guard: an image of more pixels is refused from its header, never
    #: decoded (a bad record: skipped and counted under bad_records: skip), by fetch,
    #: preprocess and `segflow predict`. 100 MP is above any camera's photo; decoding one
    #: takes about 3 bytes a pixel (300 MB). The service has its own, serve.max_pixels.
    max_pixels: int = Field(100_000_000, ge=1)
    #: Archive-bomb guards for an archive source (and `segflow predict`'s archives),
    #: counted while extracting, member by member, on the bytes actually written: the
    #: extracted bytes (50 GB: Cityscapes' two packages are 11 GB), the files (Cityscapes:
    #: about 25,000; COCO 2017: 160,000) and the extracted bytes per byte of archive (real
    #: datasets: 1-20, JPEG/PNG do not compress; a zip of zeros: ~1000). Over one, the
    #: partial extraction is deleted and the error names the key.
    max_extract_bytes: int = Field(50_000_000_000, ge=1)
    max_extract_files: int = Field(1_000_000, ge=1)
    max_compression_ratio: float = Field(200.0, gt=1.0)
    #: Largest annotation file (JSON, XML, CSV) read, in bytes: a parsed JSON takes about
    #: 10x its size in memory. 2 GB is above COCO's largest export (450 MB, LVIS 1 GB).
    max_annotation_bytes: int = Field(2_000_000_000, ge=1)

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, digest: str | None) -> str | None:
        if digest is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise ValueError("sha256 must be 64 hexadecimal digits (`sha256sum FILE` prints it)")
        return digest.lower() if digest else digest

    @field_validator("colour_map")
    @classmethod
    def _rgb_keys(cls, colour_map: dict[str, str]) -> dict[str, str]:
        for key in colour_map:
            parts = key.split(",")
            if len(parts) != 3 or not all(p.strip().isdigit() and int(p) <= 255 for p in parts):
                raise ValueError(f"key {key!r} is not a colour 'r,g,b' (three values 0..255), e.g. '128,64,128'")
        return colour_map

    @model_validator(mode="after")
    def _url_needs_digest(self) -> FetchParams:
        if self.source.startswith(("http://", "https://")) and not self.sha256:
            raise ValueError(
                f"source {self.source!r} is a URL: set fetch.sha256 to the archive's sha256 "
                "so a corrupt or changed download is caught"
            )
        return self


class RasterizeParams(Section):
    #: What pixels with no region become: a class name (usually background) or "ignore".
    unlabeled: str = "background"
    #: How shapes become pixels: "opencv" (cv2.fillPoly, sub-pixel vertices), "pil" (PIL
    #: ImageDraw: the rule of Cityscapes' json2labelImg and labelme2voc), or "auto": pil
    #: for Cityscapes and LabelMe annotations, opencv for the others.
    fill: Literal["auto", "opencv", "pil"] = "auto"
    #: Polylines have no area: 0 skips them (counted in the report), N > 0 draws them as
    #: lines N pixels wide (e.g. cracks, lane markings).
    polyline_width: int = Field(0, ge=0, le=255)
    #: Points likewise: 0 skips them, N > 0 paints a disc of radius N.
    point_radius: int = Field(0, ge=0, le=255)
    #: Fill polylines that trace an outline as polygons: closed ones, and open ones whose
    #: ends lie within max(3 px, 5% of the line's length) (see segflow.data.draw). A
    #: line object (crack, lane) never meets itself, and today such outlines paint nothing.
    fill_outlines: bool = True
    #: Painting order where shapes overlap: "file" (later covers earlier, as stacked in
    #: the tool) or "area" (larger first, so a small shape inside a big one stays visible).
    #: An explicit layer from the tool (CVAT's z_order) wins over both.
    order: Literal["file", "area"] = "file"


class PreprocessParams(Section):
    #: "auto": the working scale, training crop and inference tile are planned from the
    #: data (segflow.data.plan); a number or [height, width] (multiples of 32) fixes the
    #: crop and tile instead and scales the median image to fit it (a letterbox).
    image_size: Literal["auto"] | int | tuple[int, int] = "auto"
    #: Plan rule 1: the 5th-percentile object keeps at least this many pixels across.
    min_object_px: float = Field(12.0, gt=0.0)
    #: Plan rule 4: the largest training crop side (pixels, multiple of 32), whatever the
    #: objects: bounds the memory and time of a step (train.steps_per_epoch sets the epoch).
    max_crop: int = Field(512, ge=64, le=4096)
    #: Fractions of images in the validation and test splits; the rest is training.
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    #: A validation split of fewer images than this, or than 10% of the non-test images, is
    #: topped up from train (logged): one photo is too few to choose a checkpoint by. 0 = never.
    min_val_images: int = Field(3, ge=0)
    #: "folders": keep the split of images under train/val/test folders (also training,
    #: valid, validation, testing; any case) or named by the reader (Cityscapes), carving
    #: a missing val/test split from train; "random": split every image at random;
    #: "auto": folders when any image has one, else random.
    split: Literal["auto", "random", "folders"] = "auto"
    #: Near duplicates (see fetch.near_duplicate_distance): "group" keeps each group in one
    #: split, as identical images always are (frames of one scene never straddle train and
    #: test, even when the dataset's own folders part them); "report" only lists them.
    near_duplicates: Literal["report", "group"] = "group"
    #: Drawn (not folder-named) test and val splits show every class that two training photos
    #: show, by swapping a training photo in for one of theirs (seeded, logged); False: the
    #: split falls as the seeded draw puts it.
    cover_classes: bool = True

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, size: str | int | tuple[int, int]) -> str | int | tuple[int, int]:
        # A U-Net of depth 5 halves the resolution five times.
        sides = [] if size == "auto" else [size] if isinstance(size, int) else list(size)
        if any(side % 32 or not 32 <= side <= 4096 for side in sides):
            raise ValueError(
                f"must be auto, or a multiple of 32 from 32 to 4096 (or [height, width] of them): a U-Net "
                f"halves it 5 times; got {size}"
            )
        return size

    @model_validator(mode="after")
    def _room_for_training(self) -> PreprocessParams:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self
