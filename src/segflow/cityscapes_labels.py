"""The official Cityscapes label table, taken from cityscapesscripts (never re-typed).

`cityscapesscripts.helpers.labels` defines every label's id, trainId, ignoreInEval and
colour. From it segflow derives what ``classes.preset: cityscapes`` fills in: the 19
evaluation classes in trainId order (so a mask value is the trainId), a label map
sending every other label (``out of roi``, ``ego vehicle``, ``polegroup``, ...) to the
ignore index, and the official colours. Masks then equal the official
``*_gtFine_labelTrainIds.png``.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import id2label, labels, name2label, trainId2label

__all__ = ["TRAIN_CLASSES", "official_label", "preset", "train_id_lut"]

#: The evaluation classes, index = trainId (road, sidewalk, ..., bicycle).
TRAIN_CLASSES: tuple[str, ...] = tuple(
    trainId2label[train_id].name for train_id in sorted(t for t in trainId2label if 0 <= t < 255)
)


def official_label(name: str) -> str | None:
    """The label table's name for an annotation label, or None if unknown.

    As json2labelImg does: ``cargroup`` (a crowd of cars) is ``car`` when only the
    name without the ``group`` suffix is known.
    """
    if name not in name2label and name.endswith("group"):
        name = name[: -len("group")]
    return name if name in name2label else None


def preset() -> dict[str, object]:
    """``names``, ``label_map`` and ``palette`` for ``classes.preset: cityscapes``."""
    label_map: dict[str, str] = {}
    for label in labels:
        if 0 <= label.trainId < 255:
            target = trainId2label[label.trainId].name
            if target != label.name:  # several labels may share a trainId
                label_map[label.name] = target
        else:  # trainId 255 or -1: not one of the evaluation classes
            label_map[label.name] = "ignore"
    palette = [list(name2label[name].color) for name in TRAIN_CLASSES]
    return {"names": list(TRAIN_CLASSES), "label_map": label_map, "palette": palette}


def train_id_lut(ignore_index: int = 255) -> np.ndarray:
    """(256,) uint8 table from label id to trainId; ids not in the table -> `ignore_index`.

    ``train_id_lut()[label_ids_png]`` turns a ``*_labelIds.png`` into trainIds.
    """
    lut = np.full(256, ignore_index, np.uint8)
    for label_id, label in id2label.items():
        if 0 <= label_id < 256 and 0 <= label.trainId < 255:
            lut[label_id] = label.trainId
    return lut
