"""VIA shapes and region attributes -> canonical `Region`s (shared by the CSV and JSON readers).

VIA stores a region as ``shape_attributes`` (``name`` plus the shape's numbers, or
``all_points_x/y``) and ``region_attributes`` (free-form; the label is under a key the
user chose, ``fetch.label_key``). Every error names the region and says how to fix it.
"""

from __future__ import annotations

import logging
from typing import Any

from segflow.data.readers.common import number
from segflow.data.records import ImageAnnotation, Region
from segflow.errors import AnnotationError

__all__ = ["VIA_SHAPES", "via_region", "via_image", "warn_unlabeled"]

log = logging.getLogger("segflow.data.readers.via")  # one logger name for every VIA message

#: Shapes VIA 1.x/2.x draws (all canonical shapes but mask).
VIA_SHAPES = ("polygon", "polyline", "point", "rect", "circle", "ellipse")
# Named numbers each shape needs; polygon and polyline carry point lists instead.
_GEOMETRY_KEYS = {
    "rect": ("x", "y", "width", "height"),
    "circle": ("cx", "cy", "r"),
    "ellipse": ("cx", "cy", "rx", "ry"),
    "point": ("cx", "cy"),
}
# Fewest distinct vertices that make the shape (records.py): an area, or a line.
_MIN_POINTS = {"polygon": 3, "polyline": 2}
_REDRAW = "fix the value or redraw the region in VIA"


def _number(value: Any, key: str, where: str) -> float:
    return number(value, key, where, _REDRAW)


def _field(shape: dict[str, Any], key: str, where: str) -> Any:
    """Return `shape[key]`, or raise naming the key and the keys the shape does have."""
    if key not in shape:
        raise AnnotationError(
            f"{where}: {shape['name']} has no {key!r} (it has {sorted(shape)}); {_REDRAW}",
            reason="bad geometry",
        )
    return shape[key]


def _points(shape: dict[str, Any], where: str) -> tuple[tuple[float, float], ...]:
    """Vertices of a polygon or polyline from VIA's ``all_points_x/y`` lists."""
    name = shape["name"]
    columns = {key: _field(shape, key, where) for key in ("all_points_x", "all_points_y")}
    for key, values in columns.items():
        if not isinstance(values, list):
            raise AnnotationError(
                f"{where}: {key} is {values!r}, not a list of numbers; {_REDRAW}",
                reason="bad geometry",
            )
    xs, ys = columns["all_points_x"], columns["all_points_y"]
    if len(xs) != len(ys):
        raise AnnotationError(
            f"{where}: {name} has {len(xs)} all_points_x but {len(ys)} all_points_y; {_REDRAW}",
            reason="bad geometry",
        )
    points = [
        (_number(x, f"all_points_x[{i}]", where), _number(y, f"all_points_y[{i}]", where))
        for i, (x, y) in enumerate(zip(xs, ys))
    ]
    # Records close polygons implicitly; some tools repeat the first vertex at the end.
    if name == "polygon" and len(points) > 1 and points[-1] == points[0]:
        points.pop()
    needed, distinct = _MIN_POINTS[name], len(set(points))  # a repeated vertex adds nothing
    if distinct < needed:
        raise AnnotationError(
            f"{where}: {name} has {distinct} points, needs at least {needed}; delete the region or redraw it",
            reason="bad geometry",
        )
    return tuple(points)


def _label(attributes: Any, key: str, where: str, other_keys: set[str]) -> str:
    """The region's label: ``attributes[key]``, text or a one-option checkbox dict.

    Empty when the region carries none (the key absent, null, blank, or a checkbox with
    nothing ticked): one-class datasets often leave ``region_attributes`` as ``{}``; fetch
    gives such regions ``fetch.default_label``. The other attribute keys of such a region
    go into `other_keys`, so the reader can say that one of them may hold the label.
    """
    if not isinstance(attributes, dict):
        raise AnnotationError(
            f"{where}: region_attributes is {attributes!r}, not a JSON object; export the annotations again from VIA",
            reason="no label",
        )
    value = attributes.get(key)
    if isinstance(value, dict):
        # VIA stores checkbox attributes as {"option": true, ...}: at most one may be ticked.
        checked = [option.strip() for option, on in value.items() if on and option.strip()]
        if len(checked) <= 1:
            return checked[0] if checked else ""
        raise AnnotationError(
            f"{where}: region_attributes[{key!r}] has {len(checked)} options ticked "
            f"{checked} of {sorted(value)}, needs at most one; untick all but one in VIA",
            reason="no label",
        )
    if value is None or (isinstance(value, str) and not value.strip()):
        other_keys.update(k for k, v in attributes.items() if k != key and v not in ("", None, {}))
        return ""
    if isinstance(value, str):
        return value.strip()
    raise AnnotationError(
        f"{where}: region_attributes[{key!r}] is {value!r}, not a label; it has {sorted(attributes)}: "
        "set fetch.label_key in params.yaml, or label the region in VIA",
        reason="no label",
    )


def via_region(
    shape: Any, attributes: Any, label_key: str, where: str, origin: str, other_keys: set[str] | None = None
) -> Region:
    """Build one `Region` from VIA's shape and region attributes; `where` prefixes errors.

    The label is empty when the region has none; the keys its region_attributes do have
    are then added to `other_keys` (see `warn_unlabeled`).
    """
    if not isinstance(shape, dict):
        raise AnnotationError(
            f"{where}: shape attributes are {shape!r}, not a JSON object; export the annotations again from VIA",
            reason="bad geometry",
        )
    name = shape.get("name")
    if name not in VIA_SHAPES:
        raise AnnotationError(
            f"{where}: unknown shape {name!r}; known shapes are {list(VIA_SHAPES)}; redraw the region as one of them",
            reason="unknown shape",
        )
    label = _label(attributes, label_key, where, set() if other_keys is None else other_keys)
    if name in _MIN_POINTS:
        return Region(label=label, shape=name, points=_points(shape, where), origin=origin)
    geometry = {key: _number(_field(shape, key, where), key, where) for key in _GEOMETRY_KEYS[name]}
    if name == "point":
        point = ((geometry["cx"], geometry["cy"]),)
        return Region(label=label, shape=name, points=point, origin=origin)
    if name == "rect":
        # A rectangle dragged up or left may be stored with a negative width or height from
        # its starting corner: the same rectangle from its top-left corner.
        for start, size in (("x", "width"), ("y", "height")):
            if geometry[size] < 0:
                geometry[start], geometry[size] = geometry[start] + geometry[size], -geometry[size]
    if name == "ellipse":
        # Older VIA versions write no theta: their ellipses are never rotated.
        geometry["theta"] = _number(shape.get("theta", 0), "theta", where)
    return Region(label=label, shape=name, geometry=geometry, origin=origin)


def via_image(filename: str, regions: list[Region], origin: str) -> ImageAnnotation:
    """Build one `ImageAnnotation`, warning about regions drawn twice."""
    unique = {(r.label, r.shape, r.points, tuple(sorted(r.geometry.items()))) for r in regions}
    if len(unique) < len(regions):  # kept: a duplicate only paints the same pixels again
        repeats = len(regions) - len(unique)
        log.warning("image %s: %d regions repeat another exactly (%s)", filename, repeats, origin)
    return ImageAnnotation(filename=filename, regions=tuple(regions), origin=origin)


def warn_unlabeled(path: Any, images: list[ImageAnnotation], label_key: str, other_keys: set[str]) -> None:
    """Warn once per file when regions without `label_key` carry other attributes (a likely typo)."""
    unlabeled = sum(not region.label for image in images for region in image.regions)
    if unlabeled and other_keys:
        log.warning(
            "%s: %d regions have no %r in region_attributes, which hold %s; set fetch.label_key "
            "if one of those is the label (else they get fetch.default_label)",
            path,
            unlabeled,
            label_key,
            sorted(other_keys),
        )
