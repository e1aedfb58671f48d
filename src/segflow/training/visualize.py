"""Pictures a person reads: best/worst image grids, the confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; the stages run without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from segflow.colours import colorize, overlay  # noqa: E402

__all__ = ["save_grid", "normalise_rows", "save_confusion"]


def save_grid(
    path: Path,
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]],
    class_names: list[str],
    colours: np.ndarray,
    heading: str,
) -> None:
    """Save one row per example: image | truth | prediction | overlay, with a class legend.

    Args:
        rows: (image (H, W, 3) uint8, truth (H, W), prediction (H, W), caption) each.
    """
    fig, axes = plt.subplots(len(rows), 4, figsize=(12, 2.9 * len(rows) + 0.6), squeeze=False)
    for r, (image, truth, prediction, caption) in enumerate(rows):
        panels = (image, colorize(truth, colours), colorize(prediction, colours), overlay(image, prediction, colours))
        for c, picture in enumerate(panels):
            axes[r, c].imshow(picture)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            if r == 0:
                axes[r, c].set_title(("image", "truth", "prediction", "overlay")[c])
        axes[r, 0].set_ylabel(caption, fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i] / 255) for i in range(len(class_names))]
    fig.legend(handles, class_names, loc="lower center", ncol=min(len(class_names), 8), fontsize=8)
    fig.suptitle(heading)
    fig.tight_layout(rect=(0, 0.04, 1, 0.98))
    fig.savefig(path, dpi=70)
    plt.close(fig)


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
