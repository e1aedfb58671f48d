"""Champion/challenger: promote a candidate over `@champion`, or roll back.

`promote` scores the candidate and the current champion through their pyfuncs on the
same frozen test split (`segflow.registry.scoring`), applies the rule in ``params.yaml``
(``promote.min_miou_gain``, ``promote.max_class_drop``) and moves `@champion` only if the
candidate passes, or if forced. `rollback` moves it back to the previous champion. Both
hold the registry's champion lock and move the alias by compare-and-set, and record the
decision on the model version and in a JSON file (see `segflow.registry.champion`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from segflow.config import Params, PromoteParams
from segflow.registry import tracking
from segflow.registry.champion import (
    Outcome,
    RegistryError,
    champion_history,
    champion_lock,
    champion_version,
    move_champion,
    record_decision,
    set_champion_history,
)
from segflow.registry.pyfunc import SegmentationModel
from segflow.registry.scoring import Scores, TestSplit, load_test_split, score
from segflow.registry.versions import load_pyfunc

__all__ = ["Verdict", "Decision", "rule_text", "compare", "resolve_candidate", "score_version", "promote", "rollback"]

#: Slack in score comparisons, so equal scores summed in another order still compare equal.
EPSILON = 1e-9


@dataclass(frozen=True)
class Verdict:
    passed: bool
    #: One line per check, passed or failed.
    reasons: list[str]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    #: The version the decision is about (the new champion, for a rollback).
    version: str
    champion_before: str | None
    champion_after: str | None
    reasons: list[str]
    candidate: Scores | None = None
    champion: Scores | None = None
    split_sha256: str | None = None
    #: The record as written (files, time, code and data versions); None when nothing changed.
    record: dict | None = field(default=None, repr=False)


def rule_text(rule: PromoteParams) -> str:
    return (
        f"test mIoU >= champion's + {rule.min_miou_gain}; no class IoU more than "
        f"{rule.max_class_drop} below the champion's"
    )


def compare(candidate: Scores, champion: Scores, rule: PromoteParams) -> Verdict:
    """Apply the promotion rule. Classes without a defined IoU on either side are skipped."""
    if candidate.class_names != champion.class_names:
        return Verdict(
            False,
            [
                f"class names differ (candidate {candidate.class_names}, champion {champion.class_names}): "
                "the scores cannot be compared; use --force to promote anyway"
            ],
        )
    reasons, passed = [], True
    need = champion.miou + rule.min_miou_gain
    if candidate.miou >= need - EPSILON:  # False for NaN
        reasons.append(f"mIoU {candidate.miou:.4f} >= {need:.4f} (champion {champion.miou:.4f} + {rule.min_miou_gain})")
    else:
        passed = False
        reasons.append(f"mIoU {candidate.miou:.4f} < {need:.4f} (champion {champion.miou:.4f} + {rule.min_miou_gain})")
    drops = [
        (name, new, old)
        for name, new, old in zip(candidate.class_names, candidate.iou, champion.iou)
        if not (math.isnan(new) or math.isnan(old)) and old - new > rule.max_class_drop + EPSILON
    ]
    for name, new, old in drops:
        passed = False
        reasons.append(
            f"{name} IoU {new:.4f} is {old - new:.4f} below the champion's {old:.4f} (max {rule.max_class_drop})"
        )
    if not drops:
        reasons.append(f"no class IoU more than {rule.max_class_drop} below the champion's")
    return Verdict(passed, reasons)


def resolve_candidate(client: mlflow.MlflowClient, name: str, version: str | None, run_id: str | None) -> str:
    """The version to promote: `version`, else the newest one from `run_id`, else `@candidate`."""
    if version is not None:
        try:
            return str(client.get_model_version(name, str(version)).version)
        except MlflowException:
            raise RegistryError(f"{name!r} has no version {version}: `segflow models` lists them") from None
    if run_id is not None:
        found = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
        if not found:
            raise RegistryError(
                f"run {run_id} registered no version of {name!r}: `segflow models` lists versions and runs"
            )
        return str(max(int(v.version) for v in found))
    try:
        return str(client.get_model_version_by_alias(name, tracking.CANDIDATE).version)
    except MlflowException:
        raise RegistryError(
            f"{name!r} has no @{tracking.CANDIDATE}: train one (`dvc repro`) or give --version"
        ) from None


def score_version(name: str, version: str, split: TestSplit, ignore_index: int) -> Scores:
    """Load version `version` of `name` as served (its pyfunc) and score it on `split`.

    Raises:
        RegistryError: the version is not a segflow pyfunc (e.g. registered by an older
            segflow as a plain PyTorch model).
    """
    loaded = load_pyfunc(f"models:/{name}/{version}")
    try:
        model = loaded.unwrap_python_model()
    except MlflowException:
        model = None
    class_names = (loaded.metadata.metadata or {}).get("class_names")
    if not isinstance(model, SegmentationModel) or not class_names:
        raise RegistryError(
            f"version {version} of {name!r} is not a segflow image->mask pyfunc (registered by an older "
            "segflow?): it cannot be scored; retrain it, or use --force to replace it without a comparison"
        )
    return score(model, split, list(class_names), ignore_index)


def _judge(params: Params, name: str, candidate: str, champion: str | None, split, ignore, force: bool):  # noqa: ANN001, ANN202
    """Score the candidate (and the champion, if any) on the test split and apply the rule:
    (candidate scores, champion scores or None, reasons, outcome)."""
    candidate_scores = score_version(name, candidate, split, ignore)
    champion_scores, reasons, passed = None, [], False
    if champion is None:
        return candidate_scores, None, ["first model: champion without comparison"], Outcome.FIRST_CHAMPION
    try:
        champion_scores = score_version(name, champion, split, ignore)
    except RegistryError as exc:
        if not force:
            raise
        reasons.append(str(exc))
    if champion_scores is not None:
        verdict = compare(candidate_scores, champion_scores, params.promote)
        passed, reasons = verdict.passed, reasons + verdict.reasons
    outcome = Outcome.PROMOTED if passed else Outcome.FORCED if force else Outcome.REFUSED
    return candidate_scores, champion_scores, reasons, outcome


def _crown(client: mlflow.MlflowClient, name: str, candidate: str, champion: str | None) -> None:
    """Move @champion from `champion` to `candidate` (compare-and-set) and extend the history."""
    move_champion(client, name, candidate, expected=champion)
    history = champion_history(client, name)
    if champion is not None and history[-1:] != [champion]:
        history.append(champion)  # the alias was moved by hand since
    set_champion_history(client, name, [*history, candidate])


def promote(
    params: Params,
    preprocess_dir: Path,
    record_dir: Path,
    root: Path,
    version: str | None = None,
    run_id: str | None = None,
    force: bool = False,
) -> Decision:
    """Compare the candidate with `@champion` and move the alias if the rule (or `force`) says so.

    Raises:
        RegistryError: no such version, an unscorable champion without `force`, or
            `ChampionMoved` when the champion changed during the comparison.
    """
    tracking.configure(root)
    client = mlflow.MlflowClient()
    name = params.mlflow.model_name
    candidate = resolve_candidate(client, name, version, run_id)
    split = load_test_split(preprocess_dir)
    ignore = params.classes.ignore_index
    with champion_lock(name):
        champion = champion_version(client, name)
        if champion == candidate:
            reasons = [f"version {candidate} is already @champion"]
            return Decision(Outcome.ALREADY_CHAMPION, candidate, champion, champion, reasons)
        candidate_scores, champion_scores, reasons, outcome = _judge(
            params, name, candidate, champion, split, ignore, force
        )
        after = champion if outcome is Outcome.REFUSED else candidate
        if after != champion:
            _crown(client, name, candidate, champion)
        record = record_decision(
            client,
            name,
            candidate,
            {
                "action": "promote",
                "outcome": outcome,
                "model": name,
                "version": candidate,
                "champion_before": champion,
                "champion_after": after,
                "forced": force,
                "reasons": reasons,
                "rule": {**params.promote.model_dump(), "text": rule_text(params.promote)},
                "metrics": {
                    "candidate": candidate_scores.as_dict(),
                    "champion": champion_scores.as_dict() if champion_scores else None,
                },
                "test_split": {"folder": str(split.folder), "sha256": split.sha256, "images": len(split)},
                "code": tracking.code_version(root),
                "data_md5": tracking.data_version(root),
            },
            record_dir,
        )
    return Decision(
        outcome, candidate, champion, after, reasons, candidate_scores, champion_scores, split.sha256, record
    )


def rollback(params: Params, record_dir: Path, root: Path) -> Decision:
    """Move `@champion` back to the champion before it.

    Raises:
        RegistryError: there is no champion, or none before it.
    """
    tracking.configure(root)
    client = mlflow.MlflowClient()
    name = params.mlflow.model_name
    with champion_lock(name):
        current = champion_version(client, name)
        if current is None:
            raise RegistryError(f"{name!r} has no @champion to roll back")
        history = champion_history(client, name)
        if history[-1:] == [current]:
            history.pop()  # otherwise the alias was moved by hand: go back to the last known one
        while history and not _exists(client, name, history[-1]):
            history.pop()  # deleted versions cannot be champion again
        if not history:
            raise RegistryError(f"version {current} is the first champion of {name!r}: there is none before it")
        previous = history[-1]
        move_champion(client, name, previous, expected=current)
        set_champion_history(client, name, history)
        reasons = [f"rollback: version {current} -> version {previous}"]
        record = record_decision(
            client,
            name,
            previous,
            {
                "action": "rollback",
                "outcome": Outcome.ROLLED_BACK,
                "model": name,
                "version": previous,
                "champion_before": current,
                "champion_after": previous,
                "reasons": reasons,
                "rule": None,
                "metrics": {},
                "test_split": None,
                "code": tracking.code_version(root),
                "data_md5": tracking.data_version(root),
            },
            record_dir,
        )
        client.set_model_version_tag(name, current, "rollback.demoted_at", record["at"])
    return Decision(Outcome.ROLLED_BACK, previous, current, previous, reasons, record=record)


def _exists(client: mlflow.MlflowClient, name: str, version: str) -> bool:
    try:
        client.get_model_version(name, version)
    except MlflowException:
        return False
    return True
