"""A predicted mask handed out: what it holds in numbers, and as a PNG.

`class_shares` counts each class's pixels; `mask_png` writes the mask as a palette PNG
whose pixel values are the class indices. The service's answers (`segflow.serving.app`)
and `segflow predict`'s files (`segflow.predict.segment`) both come from here; the mask's
regions as polygons come from `segflow.data.trace`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

__all__ = ["class_shares", "mask_png"]


def class_shares(mask: np.ndarray, class_names: list[str], palette: list[list[int]]) -> list[dict]:
    """Per class: index, name, colour (#rrggbb), pixel count and share of the image."""
    counts = np.bincount(mask.ravel(), minlength=len(class_names))[: len(class_names)]
    total = max(int(mask.size), 1)
    return [
        {
            "index": i,
            "name": name,
            "colour": "#{:02x}{:02x}{:02x}".format(*palette[i]),
            "pixels": int(counts[i]),
            "share": float(counts[i]) / total,
        }
        for i, name in enumerate(class_names)
    ]


def mask_png(mask: np.ndarray, palette: list[list[int]]) -> bytes:
    """`mask` (H, W) as a palette PNG: its pixel values are the class indices (read it
    with Pillow, ``np.array(Image.open(f))``), and viewers show it in the class colours."""
    image = Image.fromarray(mask)
    colours = [c for colour in palette for c in colour]
    image.putpalette(colours + [0] * (768 - len(colours)))  # other values (ignore) black
    out = io.BytesIO()
    image.save(out, "PNG", compress_level=1)  # masks compress well even at the fastest level
    return out.getvalue()
