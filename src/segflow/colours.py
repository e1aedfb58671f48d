"""Class colours: the palette a model carries in its metadata, masks coloured and overlaid.

Shared by every layer that draws a mask (evaluation pictures, the registered model's
metadata, the service's page and the ONNX file's metadata), so it imports nothing of segflow.
"""

from __future__ import annotations

import numpy as np

__all__ = ["palette", "colorize", "overlay"]


def palette(num_classes: int, colours: list | None = None) -> np.ndarray:
    """(num_classes, 3) uint8 RGB colours: `colours` when given, else matplotlib's tab10/tab20."""
    if colours:
        return np.array(colours, dtype=np.uint8)
    from matplotlib import colormaps  # only here: the service needs no plotting otherwise

    cmap = colormaps["tab20" if num_classes > 10 else "tab10"]
    return (np.array([cmap(i % cmap.N)[:3] for i in range(num_classes)]) * 255).astype(np.uint8)


def colorize(mask: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) RGB; indices without a colour are black."""
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)
    known = mask < len(colours)
    out[known] = colours[mask[known]]
    return out


def overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the coloured `mask` over `image` (H, W, 3) uint8 with opacity `alpha`."""
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colorize(mask, colours)
    return blended.clip(0, 255).astype(np.uint8)
