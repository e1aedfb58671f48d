"""Pictures a person reads: best/worst image grids, the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; the stages run without a display

import cv2  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from segflow.colours import colorize, overlay  # noqa: E402

__all__ = ["PANEL_SIDE", "save_grid", "normalise_rows", "save_confusion"]


#: Longest side of one panel in the best/worst grids: photos up to this are shown at full
#: resolution, larger ones shrunk to it (a 12 MP photo would make a 16,000 px wide row).
PANEL_SIDE = 1024


def _fit(text: str, width: int, scale: float) -> str:
    """`text` shortened in the middle ("abc…xyz") to fit `width` pixels at font `scale`."""
    if cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width:
        return text
    keep = len(text)
    while keep > 4:
        keep -= 1
        short = f"{text[: keep // 2]}...{text[len(text) - keep // 2 :]}"
        if cv2.getTextSize(short, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] <= width:
            return short
    return text[:4]


def _banner(text: str, width: int, height: int = 28, scale: float = 0.55) -> np.ndarray:
    bar = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(
        bar, _fit(text, width - 12, scale), (6, height - 9), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA
    )
    return bar


def save_grid(
    path: Path,
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]],
    class_names: list[str],
    colours: np.ndarray,
    heading: str,
) -> None:
    """Save one row per example at full resolution: image | truth | prediction | overlay,
    each row under its caption (shortened in the middle to fit), a class legend last.

    Args:
        rows: (image (H, W, 3) uint8, truth (H, W), prediction (H, W), caption) each.
    """
    strips = []
    for image, truth, prediction, caption in rows:
        scale = min(1.0, PANEL_SIDE / max(image.shape[:2]))
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        panels = [image, colorize(truth, colours), colorize(prediction, colours), overlay(image, prediction, colours)]
        panels = [
            cv2.resize(p, size, interpolation=cv2.INTER_AREA if i == 0 or i == 3 else cv2.INTER_NEAREST)
            if scale < 1
            else p
            for i, p in enumerate(panels)
        ]
        gap = np.full((size[1], 4, 3), 255, np.uint8)
        strip = np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)
        strips.append(np.concatenate([_banner(caption, strip.shape[1]), strip], axis=0))
    width = max(s.shape[1] for s in strips)
    strips = [np.pad(s, ((0, 6), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips]
    legend = _banner(heading + "   |   image, truth, prediction, overlay", width)
    swatches = np.full((26, width, 3), 255, np.uint8)
    x = 6
    for name, colour in zip(class_names, colours):
        cv2.rectangle(swatches, (x, 6), (x + 14, 20), tuple(int(v) for v in colour), -1)
        cv2.putText(swatches, name, (x + 18, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 30 + cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)[0][0]
    picture = np.concatenate([legend, swatches, *strips], axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))


def normalise_rows(confusion: np.ndarray) -> np.ndarray:
    """Each truth row of `confusion` as shares of that class's pixels (a row of zeros
    where the class never occurs)."""
    totals = confusion.sum(axis=1, keepdims=True)
    return np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)


def save_confusion(path: Path, confusion: np.ndarray, class_names: list[str]) -> None:
    """Save the row-normalised confusion matrix (rows: truth) as a heat map."""
    normalised = normalise_rows(confusion)
    size = 1.0 + 0.6 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    for (row, col), value in np.ndenumerate(normalised):
        ax.text(
            col, row, f"{value:.2f}", ha="center", va="center", color="white" if value > 0.5 else "black", fontsize=7
        )
    fig.colorbar(image, ax=ax, fraction=0.046)
    ax.set_title("confusion (row-normalised)")
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
