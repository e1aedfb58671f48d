"""The tables a predict run leaves: the summary (what to look at first) and class shares.

``summary.csv`` / ``summary.json``: one row per photo in the order asked for
(``uncertain``: lowest confidence first, the photos to check or annotate first; or by
name), failed photos last with their error. Confidence is the mean over pixels of the
largest class probability (`segflow.inference.segment.confidence`): 1 = certain
everywhere, 1/classes = a guess. ``shares.csv`` / ``shares.json``: one row per photo,
the share of its pixels per class.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from segflow.predict.segment import FAILED, Outcome

__all__ = ["ordered", "write_summary", "write_shares"]

_SUMMARY_COLUMNS = ("rank", "name", "status", "confidence", "width", "height", "seconds", "error")


def ordered(outcomes: list[Outcome], sort: str) -> list[Outcome]:
    """`outcomes` by name, or least confident first (``sort="uncertain"``); failed ones last."""
    scored = sorted((o for o in outcomes if o.record is not None), key=lambda o: o.name)
    if sort == "uncertain":
        scored.sort(key=lambda o: o.record["confidence"])  # stable: ties stay by name
    return scored + sorted((o for o in outcomes if o.record is None), key=lambda o: o.name)


def _rows(outcomes: list[Outcome]) -> list[dict]:
    rows = []
    for rank, outcome in enumerate(outcomes, start=1):
        record = outcome.record or {}
        rows.append(
            {
                "rank": rank,
                "name": outcome.name,
                "status": outcome.status,
                "confidence": record.get("confidence"),
                "width": record.get("width"),
                "height": record.get("height"),
                "seconds": record.get("seconds"),
                "error": outcome.error,
            }
        )
    return rows


def _csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows({key: "" if value is None else value for key, value in row.items()} for row in rows)


def write_summary(outcomes: list[Outcome], out: Path, sort: str, model: str) -> list[Path]:
    """``summary.csv`` and ``summary.json`` of `outcomes` (already `ordered`) in `out`."""
    rows = _rows(outcomes)
    counts = {status: sum(o.status == status for o in outcomes) for status in {o.status for o in outcomes}}
    payload = {"model": model, "sort": sort, "images": len(outcomes), "counts": counts, "rows": rows}
    _csv(out / "summary.csv", list(_SUMMARY_COLUMNS), rows)
    (out / "summary.json").write_text(json.dumps(payload, indent=1))
    return [out / "summary.csv", out / "summary.json"]


def write_shares(outcomes: list[Outcome], out: Path, class_names: list[str]) -> list[Path]:
    """``shares.csv`` and ``shares.json``: per photo, the share of its pixels in each class."""
    rows = [
        {"name": o.name, **{c["name"]: round(c["share"], 6) for c in o.record["classes"]}}
        for o in outcomes
        if o.status != FAILED and o.record is not None
    ]
    _csv(out / "shares.csv", ["name", *class_names], rows)
    (out / "shares.json").write_text(json.dumps(rows, indent=1))
    return [out / "shares.csv", out / "shares.json"]
