"""params.yaml sections of the data stages: classes, fetch, rasterize, preprocess."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from segflow.config.base import IGNORE, Section

__all__ = ["AnnotationFormat", "CrowdRule", "ClassesParams", "FetchParams", "RasterizeParams", "PreprocessParams"]

#: `fetch.format`: "auto" (detect) or a reader name; segflow.data.readers.FORMATS derives from it.
AnnotationFormat = Literal["auto", "via_csv", "via_json", "coco", "labelme", "cityscapes", "cvat", "masks"]
#: `fetch.coco_crowd`: COCO crowd annotations paint their category, or the ignore index.
CrowdRule = Literal["class", "ignore"]


class ClassesParams(Section):
    #: Class names; a class's index in this list is its value in the masks.
    names: list[str] = Field(min_length=2)
    #: Annotation label -> class name, or "ignore" (also null) to paint it with
    #: ignore_index; the key "*" catches every label that is neither listed nor a class.
    label_map: dict[str, str | None] = {}
    #: "cityscapes" fills names, label_map and palette from cityscapesscripts' label
    #: table: the 19 trainId classes, every other label -> ignore (label_map entries
    #: given here override). "none": list the classes yourself.
    preset: Literal["none", "cityscapes"] = "none"
    #: Mask value for pixels that the loss and the metrics skip (padding, "ignore").
    ignore_index: int = Field(255, ge=0, le=255)
    #: RGB colour per class for pictures (same order as names); empty = a default palette.
    palette: list[tuple[int, int, int]] = []

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
    def _unique(cls, names: list[str]) -> list[str]:
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
        unknown = sorted(set(self.label_map.values()) - set(self.names) - {IGNORE})
        if unknown:
            raise ValueError(f"label_map maps to {unknown}, which are not in names {self.names}")
        if self.palette and len(self.palette) != len(self.names):
            raise ValueError(
                f"palette has {len(self.palette)} colours for {len(self.names)} classes; give one "
                "[r, g, b] per class or leave it empty"
            )
        if any(not 0 <= c <= 255 for colour in self.palette for c in colour):
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
        return label if label in self.names else self.label_map.get("*", label)


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
    #: A bad record (malformed region, unknown shape, missing or unreadable image, RLE of
    #: the wrong size): "fail" stops the stage; "skip" drops it and counts it in the report.
    bad_records: Literal["fail", "skip"] = "fail"

    @field_validator("sha256")
    @classmethod
    def _hex_digest(cls, digest: str | None) -> str | None:
        if digest is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise ValueError("sha256 must be 64 hexadecimal digits (`sha256sum FILE` prints it)")
        return digest.lower() if digest else digest

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
    order: Literal["file", "area"] = "file"


class PreprocessParams(Section):
    #: Side of the square network input; images are resized keeping aspect, then padded.
    image_size: int = Field(128, ge=32, le=4096)
    #: Fractions of images in the validation and test splits; the rest is training.
    val_fraction: float = Field(0.15, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    #: "folders": keep the split of images under train/val/test folders (also training,
    #: valid, validation, testing; any case) or named by the reader (Cityscapes), carving
    #: a missing val/test split from train; "random": split every image at random;
    #: "auto": folders when any image has one, else random.
    split: Literal["auto", "random", "folders"] = "auto"

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, size: int) -> int:
        # A U-Net of depth 5 halves the resolution five times.
        if size % 32:
            raise ValueError(f"must be a multiple of 32 (a U-Net halves it 5 times), got {size}")
        return size

    @model_validator(mode="after")
    def _room_for_training(self) -> PreprocessParams:
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must leave at least 10% for training")
        return self
