"""The decompression-bomb guard every image decode shares: pixels counted from the header.

A PNG of 30000x30000 zeros is 875 KB on disk and 2.7 GB decoded. Pillow's `Image.open`
reads only the header (the size), so the size is checked before a single pixel is
decoded, by fetch, preprocess and `segflow predict` (`fetch.max_pixels`), by the
service (`serve.max_pixels`, see `segflow.serving.decode`) and for the mask images and
bitmaps the annotation readers decode. A file whose header Pillow cannot read is left
to the decoder, whose own guard still holds (OpenCV refuses over 2^30 pixels unless
the environment's ``OPENCV_IO_MAX_IMAGE_PIXELS`` says otherwise).
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path

from PIL import Image

from segflow.config.data import FetchParams
from segflow.errors import ImageError

__all__ = ["DEFAULT_MAX_PIXELS", "header_size", "over_limit", "check_pixels"]

#: `fetch.max_pixels`' default (100 MP: above any camera's photo; see FetchParams).
DEFAULT_MAX_PIXELS: int = FetchParams.model_fields["max_pixels"].default
# Pillow's own guard, which refuses in `Image.open` over 2 x Image.MAX_IMAGE_PIXELS, names the size so.
_PILLOW_SIZE = re.compile(r"Image size \((\d+) pixels\)")


def header_size(source: Path | bytes) -> tuple[int, int] | None:
    """(width, height) from the image file's header, without decoding a pixel; None when
    Pillow cannot read the header (not an image, or a format it does not know). A size
    over Pillow's own limit comes back as (pixels, 1): Pillow names only the product.
    """
    stream = io.BytesIO(source) if isinstance(source, bytes) else source
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our limit decides, not Pillow's
        try:
            with Image.open(stream) as image:
                return image.size
        except Image.DecompressionBombError as exc:
            found = _PILLOW_SIZE.search(str(exc))
            return (int(found.group(1)), 1) if found else (2 * (Image.MAX_IMAGE_PIXELS or 0) + 1, 1)
        except Exception:  # noqa: BLE001 - any header Pillow cannot parse: the decoder decides
            return None


def over_limit(width: int, height: int, max_pixels: int, key: str) -> str | None:
    """Why a `width` x `height` image is refused under `max_pixels` (named as `key`), or None."""
    pixels = width * height
    if pixels <= max_pixels:
        return None
    size = f"{width}x{height} = {pixels:,} pixels" if height > 1 else f"{pixels:,} pixels"
    return f"the image is {size}, over the limit of {max_pixels:,} ({key})"


def check_pixels(source: Path | bytes, max_pixels: int, key: str, name: str) -> tuple[int, int] | None:
    """Refuse an image over `max_pixels` from its header; returns its (width, height), or
    None when the header is unreadable (see `header_size`).

    Raises:
        ImageError: naming `name` (the file), the size, the limit and `key`; its reason,
            "too many pixels", is what ``fetch.bad_records: skip`` counts it under.
    """
    size = header_size(source)
    problem = over_limit(*size, max_pixels, key) if size else None
    if problem:
        raise ImageError(
            f"{name}: {problem}, so it is not decoded (a decompression bomb guard); downscale the "
            f"image, or raise {key} in params.yaml if images this large are expected",
            reason="too many pixels",
        )
    return size
