"""params.yaml section of `segflow predict` and the optional predict stage: predict."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from segflow.config.base import Section

__all__ = ["ExportFormat", "PredictSort", "PredictParams"]

#: `predict.export` (and `segflow predict --export`): the annotation tool the predicted
#: polygons are written for, or none.
ExportFormat = Literal["none", "via", "cvat", "labelme", "coco"]
#: `predict.sort`: the order of the summary: least confident first, or by file name.
PredictSort = Literal["uncertain", "name"]

_STAGE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class PredictParams(Section):
    """`segflow predict` defaults, and the sources of the predict stage."""

    #: Stage ``predict@NAME`` for each entry NAME: a folder or archive of unlabeled photos,
    #: segmented by the pipeline's model into artifacts/predict/NAME. {} (the default) = no
    #: predict stage at all (dvc.yaml's ``foreach`` over an empty mapping makes none).
    sources: dict[str, str] = {}
    #: Also write a colour overlay (JPEG) of each mask over its photo.
    overlay: bool = False
    #: Write the class-share table: one row per image, the share of its pixels per class.
    shares: bool = True
    #: Write the predictions as polygons for this annotation tool (none | via | cvat |
    #: labelme | coco), to correct there instead of drawing from scratch.
    export: ExportFormat = "none"
    #: Polygon simplification tolerance in pixels (Douglas-Peucker); 0 keeps every vertex.
    #: 1 px halves the vertices of a traced boundary and moves it by at most a pixel.
    simplify: float = Field(1.0, ge=0.0)
    #: Predicted parts smaller than this many pixels are left out of the export (specks
    #: a person would only have to delete); they take the class around them.
    min_area: int = Field(16, ge=0)
    #: Summary order: uncertain (lowest mean max-probability first: the photos to check
    #: or annotate first) | name.
    sort: PredictSort = "uncertain"

    @field_validator("sources")
    @classmethod
    def _stage_sources(cls, sources: dict[str, str]) -> dict[str, str]:
        for name, source in sources.items():
            if not _STAGE_NAME.match(name):
                raise ValueError(f"source name {name!r} becomes a stage name: use letters, digits, _ and -")
            if source.startswith("~"):
                raise ValueError(f"source {name}: {source!r}: write the path out (DVC does not expand ~)")
            if not source.strip() or any(c in source for c in "*?["):
                raise ValueError(
                    f"source {name}: {source!r} must be a folder or an archive (DVC tracks it as a "
                    "dependency; a glob is for `segflow predict` only)"
                )
        return sources
