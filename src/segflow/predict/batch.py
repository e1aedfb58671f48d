"""One predict run: photos in; masks, tables and, if asked, pre-annotations out.

Below the output folder: ``masks/``, ``overlays/``, ``records/`` (`segflow.predict.segment`),
``summary.csv|json`` and ``shares.csv|json`` (`segflow.predict.report`), and ``export/``
with the polygons for the annotation tool (`segflow.predict.annotations`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from segflow.config import FetchParams, PredictParams
from segflow.data.archives import ExtractLimits
from segflow.data.writers import export_labels
from segflow.predict.annotations import export_annotations
from segflow.predict.inputs import open_source
from segflow.predict.report import ordered, write_shares, write_summary
from segflow.predict.segment import PREDICTED, Outcome, model_id, segment_photos
from segflow.runtime.predictor import Predictor

__all__ = ["PredictRun", "predict_source"]


@dataclass(frozen=True)
class PredictRun:
    """What a run did: every photo's outcome in the summary's order, the tables and export
    files written, the model, and the seconds it took."""

    outcomes: list[Outcome]
    files: list[Path]
    model: str
    seconds: float

    @property
    def images_per_second(self) -> float:
        predicted = sum(o.status == PREDICTED for o in self.outcomes)
        return predicted / self.seconds if self.seconds else 0.0


def predict_source(
    predictor: Predictor,
    source: str | Path,
    out: Path,
    options: PredictParams,
    *,
    label_map: dict[str, str] | None = None,
    label_key: str = "label",
    unlabeled: str | None = None,
    force: bool = False,
    progress: bool = True,
    fetch: FetchParams | None = None,
) -> PredictRun:
    """Segment the photos `source` names (a folder, glob, archive or image) into `out`.

    Args:
        options: overlay, shares, export, simplify, min_area and sort (``predict:``).
        label_map: ``classes.label_map``: exported labels are the user's (`export_labels`).
        label_key: the VIA region attribute holding the label (``fetch.label_key``).
        unlabeled: ``rasterize.unlabeled``: that class is exported only where it makes holes.
        force: predict photos done before (by the same model) again.
        fetch: params' fetch section, for its intake limits: ``max_pixels`` (a photo over it
            fails from its header, undecoded) and the archive limits (``max_extract_*``,
            ``max_compression_ratio``); None = their defaults.
    """
    fetch = fetch or FetchParams()
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    names = list(predictor.info.class_names)
    with open_source(source, ExtractLimits.of(fetch)) as photos:
        outcomes = segment_photos(
            predictor,
            photos,
            out,
            overlay=options.overlay,
            force=force,
            progress=progress,
            max_pixels=fetch.max_pixels,
        )
    seconds = time.perf_counter() - start
    outcomes = ordered(outcomes, options.sort)
    model = model_id(predictor)
    files = write_summary(outcomes, out, options.sort, model)
    if options.shares:
        files += write_shares(outcomes, out, names)
    if options.export != "none":
        files += export_annotations(
            outcomes,
            out / "export",
            options.export,
            names,
            export_labels(names, label_map or {}),
            simplify=options.simplify,
            min_area=options.min_area,
            background=names.index(unlabeled) if unlabeled in names else None,
            label_key=label_key,
        )
    return PredictRun(outcomes, files, model, seconds)
