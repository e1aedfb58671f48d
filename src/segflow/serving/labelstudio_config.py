"""A Label Studio project's labeling config, read for the ML backend: which tag to
predict into, on which image, with which label for each of the model's classes.

The first ``BrushLabels`` or ``PolygonLabels`` tag of the config is the one predicted
(brush: one mask a class; polygon: one polygon a region). Its ``<Label value="...">``
names become model classes through ``classes.label_map`` (params.yaml: label -> class,
``ignore``/null to skip it, ``"*"`` for every other label), or by being a class name
themselves. A label that is neither is an error naming it and the fix: the model would
silently never predict it. Model classes no label maps to (background, usually) are not
predicted.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from segflow.errors import SegflowError

__all__ = ["CONTROLS", "LabelConfigError", "Control", "read_label_config"]

#: Label Studio's control tags this backend predicts into, with their result type.
CONTROLS = {"brushlabels": "brushlabels", "polygonlabels": "polygonlabels"}
#: Largest labeling config read (Label Studio's own are a few kB).
MAX_CONFIG_CHARS = 1_000_000


class LabelConfigError(SegflowError):
    """The labeling config cannot be predicted into by this model."""


@dataclass(frozen=True)
class Control:
    """What `/predict` writes: results of `kind` from `from_name` onto `to_name`, whose
    image URL is the task's ``data[image_key]``; `labels` gives each predicted class
    index its Label Studio label."""

    kind: str
    from_name: str
    to_name: str
    image_key: str
    labels: dict[int, str]


def _class_of(label: str, class_names: list[str], label_map: dict[str, str | None]) -> str | None:
    """The class `label` paints, None when it is ignored; KeyError when it is unknown."""
    if label in label_map:
        target = label_map[label]
    elif label in class_names:
        target = label
    elif "*" in label_map:
        target = label_map["*"]
    else:
        raise KeyError(label)
    return None if target is None or target == "ignore" else target


def _parse(config: str) -> ET.Element:
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError("no labeling config: send the project's label_config (its XML)")
    if len(config) > MAX_CONFIG_CHARS or "<!DOCTYPE" in config.upper() or "<!ENTITY" in config.upper():
        raise LabelConfigError(
            f"labeling config refused: over {MAX_CONFIG_CHARS:,} characters, or it declares a DOCTYPE or "
            "entities, which Label Studio's configs never do"
        )
    try:
        return ET.fromstring(config)
    except ET.ParseError as exc:
        raise LabelConfigError(
            f"the labeling config is not valid XML ({exc}): fix it in the project's settings"
        ) from None


def read_label_config(config: str, class_names: list[str], label_map: dict[str, str | None]) -> Control:
    """The `Control` of the project's labeling `config` (XML) for a model of `class_names`.

    Raises:
        LabelConfigError: no BrushLabels/PolygonLabels tag, no image for it, or labels that
            are no class of the model (each named, with the fix).
    """
    root = _parse(config)
    tags = [el for el in root.iter() if el.tag.lower() in CONTROLS]
    if not tags:
        found = sorted({el.tag for el in root.iter()})
        raise LabelConfigError(
            f"the labeling config has no BrushLabels or PolygonLabels tag (its tags: {found}): segmentation "
            'predicts masks or polygons; add e.g. <BrushLabels name="tag" toName="image"> with one <Label> a class'
        )
    tag = tags[0]
    name, to_name = tag.get("name"), tag.get("toName")
    images = {el.get("name"): el.get("value", "") for el in root.iter() if el.tag.lower() == "image"}
    if not name or to_name not in images or not images[to_name].startswith("$"):
        raise LabelConfigError(
            f"<{tag.tag} name={name!r} toName={to_name!r}>: toName must name an <Image> whose value is a task "
            f"field such as $image (the config's images: {images})"
        )
    labels: dict[int, str] = {}
    unknown: list[str] = []
    for element in tag.iter():
        if element.tag.lower() != "label" or element.get("value") is None:
            continue
        value = element.get("value", "")
        try:
            target = _class_of(value, class_names, label_map)
        except KeyError:
            unknown.append(value)
            continue
        if target is not None and target not in class_names:
            unknown.append(f"{value} (classes.label_map -> {target})")
        elif target is not None:
            labels.setdefault(class_names.index(target), value)
    if unknown:
        raise LabelConfigError(
            f"labels {unknown} of <{tag.tag} name={name!r}> are no class of the model (its classes: {class_names}): "
            "map each to a class, or to ignore, in classes.label_map of params.yaml (e.g. "
            f"label_map: {{{unknown[0].split(' (')[0]!r}: {class_names[-1]!r}}}), or rename the label in Label Studio"
        )
    if not labels:
        raise LabelConfigError(
            f"no label of <{tag.tag} name={name!r}> maps to a class of the model ({class_names}): add a <Label> "
            "named as a class, or map one in classes.label_map"
        )
    return Control(CONTROLS[tag.tag.lower()], name, to_name, images[to_name][1:], labels)
