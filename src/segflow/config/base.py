"""What every params section shares: unknown keys are errors, values are frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["Section", "IGNORE"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Label-map target (and `rasterize.unlabeled` choice) that paints the ignore index.
IGNORE = "ignore"
