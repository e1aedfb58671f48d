"""``classes.names: auto``: the class list that the fetch stage found, and how later stages get it.

Fetch resolves ``auto`` (background plus every class the annotations name, or their
tool declares, sorted; see `ClassesParams.auto_names`) and writes the list in effect,
found or typed, to a small YAML file in its snapshot (`write_classes`), also printed so
it can be copied into params.yaml. Every later stage that needs the names takes that
file (``--classes`` in dvc.yaml, a dependency there) and `with_classes_file` puts the
names into its params. With the names typed in params.yaml the file must agree with
them, so a stage never runs on a stale snapshot.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from segflow.config import AUTO, Params
from segflow.errors import ConfigError

__all__ = ["with_names", "write_classes", "with_classes_file"]


def with_names(params: Params, names: list[str]) -> Params:
    """`params` with ``classes.names`` set to `names`, validated again (palette, label_map, ...).

    Raises:
        ConfigError: the names do not fit the rest of the classes section.
    """
    raw = params.model_dump()
    raw["classes"]["names"] = names
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(
            f"classes.names: auto found {names}, which does not fit params.yaml: {problems}; "
            "adjust classes (e.g. palette: [] or one colour per class), or type the names"
        ) from None


def write_classes(names: list[str], path: Path, found: bool) -> None:
    """Write the class list in effect to `path`; `found`: resolved from ``auto``."""
    how = "found by fetch (classes.names: auto)" if found else "as typed in params.yaml"
    header = f"# The classes in effect, {how}; index = mask value.\n# To fix them, copy this into params.yaml:\n"
    path.write_text(header + yaml.safe_dump({"classes": {"names": names}}, default_flow_style=None, sort_keys=False))


def with_classes_file(params: Params, path: Path) -> Params:
    """`params` with the names from fetch's class file at `path` when ``classes.names`` is auto.

    Raises:
        ConfigError: names are auto and the file is missing or unreadable, or typed names
            differ from the file's (a stale fetch snapshot).
    """
    auto = params.classes.names == AUTO
    if not path.is_file():
        if not auto:
            return params
        raise ConfigError(
            f"classes.names is auto, but {path} (the classes the fetch stage found) does not exist; "
            "run the fetch stage first (`dvc repro fetch`), or type the class names in params.yaml"
        )
    try:
        names = yaml.safe_load(path.read_text())["classes"]["names"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: cannot read the class list ({exc!r}); rerun the fetch stage") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"{path}: classes.names is {names!r}, not a list of names; rerun the fetch stage")
    if not auto:
        if names != params.classes.names:
            raise ConfigError(
                f"classes.names in params.yaml {params.classes.names} differ from {names} in {path}, "
                "which the fetch stage wrote; rerun the fetch stage (`dvc repro`)"
            )
        return params
    return with_names(params, names)
