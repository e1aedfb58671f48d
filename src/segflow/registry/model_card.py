"""The model card: one markdown page per registered version, logged beside its run.

What a person needs before trusting a version: which data and code made it, the class
shares it learnt from, its params, its test scores per class, the confusion matrix, and
its known weaknesses (the worst classes and what they are mistaken for).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from segflow.config import Params
from segflow.inference.graph import GraphOptions, describe
from segflow.registry.scoring import Scores

__all__ = ["WORST_CLASSES", "render_model_card"]

#: "Known weaknesses" lists at most this many classes: the lowest IoUs below the mIoU.
WORST_CLASSES = 3


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _weaknesses(scores: Scores) -> list[str]:
    names, confusion = scores.class_names, scores.confusion
    measured = [i for i, v in enumerate(scores.iou) if not math.isnan(v) and v < scores.miou]
    lines = [] if measured else ["- no class scores below the mIoU"]
    for i in sorted(measured, key=lambda i: scores.iou[i])[:WORST_CLASSES]:
        row, total = confusion[i], sum(confusion[i])
        mistakes = [(count, j) for j, count in enumerate(row) if j != i and count]
        detail = "no test pixels of this class"
        if total and mistakes:
            count, j = max(mistakes)
            detail = f"{100 * count / total:.0f}% of its pixels predicted as `{names[j]}`"
        elif total:
            detail = "its errors are false positives (other classes predicted as it)"
        lines.append(f"- `{names[i]}`: IoU {_num(scores.iou[i])}; {detail}")
    absent = [names[i] for i, v in enumerate(scores.iou) if math.isnan(v)]
    if absent:
        lines.append(f"- not measured (absent from the test split): {', '.join(absent)}")
    return lines


def _header(name: str, version: str, run_id: str, params: Params, tags: dict[str, str], split: str | None) -> list[str]:
    """The title, what the model is and how to load it, and where it came from."""
    names = list(params.classes.names)
    geometry = f"long side {tags.get('long_side', '?')} px, tiles {tags.get('tile', '?')}"
    return [
        f"# {name} version {version}",
        "",
        f"{params.model.arch} (encoder {params.model.encoder}, "
        f"{describe(GraphOptions.from_params(params.model))}) segmenting {len(names)} classes; "
        f"input at {geometry} (overlapping, blended), mask returned at the image's own size. "
        f'Load: `mlflow.pyfunc.load_model("models:/{name}/{version}").predict(rgb_array)`.',
        "",
        *_table(
            ["", ""],
            [
                ["registered", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")],
                ["MLflow run", f"`{run_id}`"],
                [
                    "code",
                    f"git `{tags.get('git_commit', 'unknown')}`"
                    + (" with uncommitted changes" if tags.get("git_dirty") == "true" else ""),
                ],
                ["data", f"fetch.source hash `{tags.get('data_md5', 'unknown')}` (dvc.lock)"],
                [
                    "test split",
                    f"sha256 `{split}`"
                    if split
                    else f"not read; all preprocessed arrays: sha256 `{tags.get('split_sha256', 'unknown')}`",
                ],
            ],
        ),
    ]


def _shares(names: list[str], train_shares: list[float] | None, test_shares: list[float] | None) -> list[str]:
    """The data section: each class's share of the labelled pixels in train and test."""
    lines = ["## Data: class shares (labelled pixels)", ""]
    if train_shares is None and test_shares is None:
        return [*lines, "Not measured (the model was registered without its data folder)."]
    rows = [
        [
            n,
            _num(100 * train_shares[i], 1) + "%" if train_shares else "n/a",
            _num(100 * test_shares[i], 1) + "%" if test_shares else "n/a",
        ]
        for i, n in enumerate(names)
    ]
    return lines + _table(["class", "train", "test"], rows)


def _parameters(params: Params) -> list[str]:
    """The params that shape the model, one row each."""
    dumped = params.model_dump(mode="json", include={"seed", "preprocess", "model", "augment", "train"})
    flat = [
        [f"`{section}.{key}`" if isinstance(values, dict) else f"`{section}`", f"`{value}`"]
        for section, values in dumped.items()
        for key, value in (values.items() if isinstance(values, dict) else [("", values)])
    ]
    return ["## Parameters", "", *_table(["param", "value"], flat)]


def _test_metrics(names: list[str], scores: Scores) -> list[str]:
    """The scores, per class, the confusion matrix and the weakest classes."""
    lines = [
        f"{scores.images} test images: mIoU **{_num(scores.miou)}**, mean Dice {_num(scores.mdice)}, "
        f"pixel accuracy {_num(scores.pixel_accuracy)}; {scores.ms_per_image:.1f} ms per image on the "
        f"registering machine; {scores.parameters:,} weights ({scores.checkpoint_bytes / 1e6:.1f} MB).",
        "",
        *_table(
            ["class", "IoU", "Dice"], [[n, _num(scores.iou[i]), _num(scores.dice[i])] for i, n in enumerate(names)]
        ),
        "",
        "## Confusion matrix (rows: truth, columns: predicted, % of the row)",
        "",
    ]
    rows = []
    for i, row in enumerate(scores.confusion):
        total = sum(row)
        rows.append([f"**{names[i]}**", *(f"{100 * c / total:.0f}" if total else "-" for c in row)])
    lines += _table(["truth \\ predicted", *names], rows)
    return lines + ["", "## Known weaknesses (classes below the mIoU, worst first)", "", *_weaknesses(scores)]


def render_model_card(
    name: str,
    version: str,
    run_id: str,
    params: Params,
    tags: dict[str, str],
    scores: Scores | None,
    train_shares: list[float] | None,
    test_shares: list[float] | None,
    split_sha256: str | None,
) -> str:
    """Markdown for one registered version; `scores` None = not evaluated at registration."""
    names = list(params.classes.names)
    lines = [
        *_header(name, version, run_id, params, tags, split_sha256),
        "",
        *_shares(names, train_shares, test_shares),
        "",
        *_parameters(params),
        "",
        "## Test metrics",
        "",
    ]
    if scores is None:
        lines.append("Not evaluated at registration: see the run's `evaluation/` artifacts, or `segflow promote`.")
    else:
        lines += _test_metrics(names, scores)
    return "\n".join(lines) + "\n"
