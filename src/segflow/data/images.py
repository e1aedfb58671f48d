"""Reading images with errors that name the file.

EXIF orientation is ignored: every stage sees the pixels as stored in the file, because
that is the grid annotation coordinates refer to. VIA draws on the stored pixels: in the
via-heads-balloon set, ``train/7.jpg`` (EXIF Orientation 3, "rotated 180°") has its head
outline on the head only in the stored view (tests/data/test_fetch.py). Decoders that apply the
tag (OpenCV's default, ``PIL.ImageOps.exif_transpose``) would turn such an image under its
mask, and for Orientation 5-8 swap its width and height.

Every image is checked against ``fetch.max_pixels`` from its header before it is decoded
(see `segflow.pixel_limit`): a decompression bomb is refused, never decoded.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from segflow.errors import ImageError
from segflow.pixel_limit import DEFAULT_MAX_PIXELS, check_pixels

__all__ = ["read_rgb"]


def read_rgb(path: Path, origin: str = "", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file into an RGB uint8 array of shape (H, W, 3).

    Grayscale and RGBA files are converted; 16-bit files are scaled to 8 bits. The EXIF
    orientation tag is ignored (see the module docstring).

    Raises:
        ImageError: the file is missing, is not a decodable image, or has more than
            `max_pixels` pixels (``fetch.max_pixels``; checked from the header).
    """
    where = f" (named in {origin})" if origin else ""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageError(
            f"{path}{where}: cannot read the image ({exc.strerror}); add the file or remove its annotations",
            reason="missing image",
        ) from None
    if data.size:
        check_pixels(path, max_pixels, "fetch.max_pixels", f"{path}{where}")
    flags = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_IGNORE_ORIENTATION  # the stored pixels, as annotated
    image = cv2.imdecode(data, flags) if data.size else None
    if image is None:
        raise ImageError(
            f"{path}{where}: not a decodable image ({data.size} bytes); replace it with a "
            "valid JPEG/PNG or remove its annotations",
            reason="unreadable image",
        )
    return image
