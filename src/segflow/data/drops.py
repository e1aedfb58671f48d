"""What a stage dropped on the way, and why: the "dropped" part of the dataset report.

Two kinds of drop:

* a *bad* record (a malformed region, an unknown shape, a missing image, an RLE whose
  size is not the image's): `Drops.bad` raises its error when strict
  (``fetch.bad_records: fail``, the default), its message ending with `SKIP_HINT` (here,
  once, not in every reader), and otherwise logs it and counts it;
* a record that is fine but paints nothing (a polygon wholly outside its image, a
  Cityscapes object marked deleted, a polyline with ``rasterize.polyline_width: 0``):
  `Drops.note` always logs and counts it.

Either way the count goes under a short reason, and the first few messages are kept
so the report can show which file and record each came from.
"""

from __future__ import annotations

import logging
from collections import Counter

from segflow.errors import SegflowError

__all__ = ["SKIP_HINT", "Drops"]

log = logging.getLogger(__name__)

#: Messages kept per reason; the count is always complete.
_EXAMPLES = 5
#: Ends a bad record's error under ``fetch.bad_records: fail``: the other way out.
SKIP_HINT = "or set fetch.bad_records: skip in params.yaml to drop such records and count them in the report"


class Drops:
    """Counts of dropped records per reason, with example messages.

    Args:
        strict: raise bad records' errors instead of counting them.
    """

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def bad(self, error: SegflowError) -> None:
        """Raise `error` when strict (saying it can be skipped); otherwise log it and count it under its reason."""
        if self.strict:
            message = str(error)
            if "bad_records" not in message:  # a reader's own message may already say so
                error.args = (f"{message}; {SKIP_HINT}",)
            raise error
        self.note(error.reason, f"{error}; skipped")

    def note(self, reason: str, message: str, expected: bool = False) -> None:
        """Count a dropped record under `reason` and log `message`.

        `expected` drops (a Cityscapes licence plate, which is never drawn) are logged
        at debug level, not as warnings: they are how the format works, not a problem.
        """
        log.log(logging.DEBUG if expected else logging.WARNING, "%s", message)
        self.counts[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < _EXAMPLES:
            examples.append(message)

    def merge(self, other: Drops) -> None:
        """Add `other`'s counts and examples to these."""
        for reason, count in other.counts.items():
            self.counts[reason] += count
            examples = self.examples.setdefault(reason, [])
            examples.extend(other.examples.get(reason, [])[: _EXAMPLES - len(examples)])

    def as_dict(self) -> dict[str, dict]:
        """``{"counts": {reason: n}, "examples": {reason: [message, ...]}}``, sorted by reason."""
        reasons = sorted(self.counts)
        return {
            "counts": {reason: self.counts[reason] for reason in reasons},
            "examples": {reason: self.examples.get(reason, []) for reason in reasons},
        }
