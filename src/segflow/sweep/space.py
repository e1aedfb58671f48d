"""What a sweep tries: a grid of values, or a space an Optuna TPE search samples.

On the command line each ``-S key=spec`` names a params.yaml key (dotted, as DVC's ``-S``
takes it) and its values:

    -S train.lr=0.001,0.003         choices (a grid axis; a categorical in a search)
    -S train.lr=0.0003..0.01:log    a range, searched only: floats (log-uniform with :log),
    -S train.steps_per_epoch=4..16  integers when both ends are integers

A sweep file (``--file sweep.yaml``) holds the same as YAML: ``space: {key: [choices] or
{low, high, log}}`` plus optional ``trials``, ``seed`` and ``jobs``. It is not a section of
params.yaml: params.yaml's sections are stage dependencies, and a sweep is not a stage.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from segflow.errors import ConfigError

__all__ = ["Range", "SweepSpec", "parse_assignment", "load_spec_file", "grid_points", "NAME_PATTERN"]

#: A sweep's name becomes DVC experiment names (git refs) and a folder: keep it plain.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_RANGE = re.compile(r"^(?P<low>[^.][^:]*?)\.\.(?P<high>[^:]+)(?P<log>:log)?$")


class Range(BaseModel):
    """A numeric interval a search samples from (both ends included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    low: float
    high: float
    log: bool = False  # sample the logarithm uniformly (learning rates, weight decay)
    integer: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low})")
        return self


class SweepSpec(BaseModel):
    """A sweep: its space, and for a search its budget and seed. ``trials`` None = a grid."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    space: dict[str, list[Any] | Range] = Field(min_length=1)
    trials: int | None = Field(None, ge=1, le=1000)  # the search's budget; None: every grid point
    seed: int = 0  # the TPE sampler's seed (the trials' own seed is params.yaml's `seed`)

    @model_validator(mode="after")
    def _consistent(self) -> SweepSpec:
        for key, values in self.space.items():
            if not _KEY.match(key):
                raise ValueError(f"{key!r} is not a params.yaml key (dotted names, e.g. train.lr)")
            if isinstance(values, list) and not values:
                raise ValueError(f"{key}: no values")
        ranges = [key for key, values in self.space.items() if isinstance(values, Range)]
        if ranges and self.trials is None:
            raise ValueError(f"{', '.join(ranges)}: a range needs a search (--trials N); a grid takes values a,b,c")
        return self

    @property
    def mode(self) -> str:
        return "grid" if self.trials is None else "tpe"

    def budget(self) -> int:
        return len(grid_points(self)) if self.trials is None else self.trials

    def as_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def _scalar(text: str) -> Any:
    """A value as YAML reads it (0.001 -> float, 4 -> int, true -> bool, resnet18 -> str),
    and 1e-4 as a number too (YAML 1.1 wants 1.0e-4)."""
    for number in (int, float):
        try:
            return number(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def parse_assignment(text: str) -> tuple[str, list[Any] | Range]:
    """``key=a,b`` -> (key, [a, b]); ``key=lo..hi[:log]`` -> (key, Range)."""
    key, sep, spec = text.partition("=")
    if not sep or not key or not spec:
        raise ConfigError(f"-S {text!r}: write KEY=VALUES, e.g. -S train.lr=0.001,0.003 or -S train.lr=1e-4..1e-2:log")
    if match := _RANGE.match(spec):
        low, high = _scalar(match["low"]), _scalar(match["high"])
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
            raise ConfigError(f"-S {text!r}: a range's ends must be numbers, e.g. 0.0003..0.01:log")
        integer = isinstance(low, int) and isinstance(high, int)
        try:
            return key, Range(low=low, high=high, log=bool(match["log"]), integer=integer)
        except ValidationError as exc:
            raise ConfigError(f"-S {text!r}: {exc.errors()[0]['msg']}") from None
    return key, [_scalar(value) for value in spec.split(",")]


def build_spec(raw: dict, where: str) -> SweepSpec:
    """Validate a sweep; errors name `where` (the flags or the file) and the key."""
    try:
        return SweepSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        at = "".join(f"{p}: " for p in first["loc"])
        raise ConfigError(f"{where}: {at}{first['msg'].removeprefix('Value error, ')}") from None


def load_spec_file(path: Path) -> dict:
    """A sweep file's mapping (space, trials, seed, jobs); validated by `build_spec`."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such sweep file")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with space:, trials:, seed:, jobs:")
    return raw


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every combination of a grid, the first key varying slowest."""
    keys = list(spec.space)
    axes = [spec.space[key] for key in keys]
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]  # type: ignore[arg-type]


def suggest(trial: Any, spec: SweepSpec) -> dict[str, Any]:
    """Sample one point of the space from an Optuna trial (ask/tell)."""
    point: dict[str, Any] = {}
    for key, values in spec.space.items():
        if isinstance(values, Range):
            if values.integer:
                point[key] = trial.suggest_int(key, int(values.low), int(values.high), log=values.log)
            else:
                point[key] = trial.suggest_float(key, values.low, values.high, log=values.log)
        else:
            point[key] = trial.suggest_categorical(key, values)
    return point


def cli_value(value: Any) -> str:
    """A value as DVC's ``-S key=value`` writes it into params.yaml (YAML syntax)."""
    if isinstance(value, float):  # positional: DVC's YAML may read 1e-05 as a string
        return numpy.format_float_positional(value, unique=True, trim="-")
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")
