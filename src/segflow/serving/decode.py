"""Uploaded bytes -> an RGB image, or a refusal that says what is wrong and how to fix it.

Each refusal is an `InputError` carrying the HTTP status the service answers with:

* 400: empty body;
* 413: more bytes than the upload limit, or more pixels than the pixel limit: the size
  is read from the header before anything is decoded, so a decompression bomb (a small
  file that decodes to gigapixels) never gets decoded;
* 415: not an image, or not PNG, JPEG, WebP or BMP;
* 422: an image that cannot be used: truncated or corrupt, or a side under ``min_side``.

16-bit, grayscale, palette, CMYK and RGBA images are converted to 8-bit RGB (alpha
dropped, as `segflow.registry.pyfunc` does), and the EXIF orientation is applied, so the mask lines
up with the picture a browser shows.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["FORMATS", "InputError", "decode_image"]

#: Formats accepted (Pillow's names): what cameras, phones and browsers produce. (Pillow
#: opens the JPEG variant some cameras write, MPO, through JPEG: its first view is used.)
FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
#: Pillow modes that hold 16-bit samples (PNG 16-bit grayscale opens as one of them).
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: What a corrupt file makes Pillow's decoders raise: OSError, SyntaxError, ValueError,
#: EOFError, struct.error, IndexError, ... A hostile file can reach any of them, and a file
#: that cannot be decoded is the sender's problem, never a 500: so every Exception.
_DECODE_ERRORS = (Exception,)


class InputError(Exception):
    """A request the service refuses: `status` is the HTTP status, the message the reason."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow image -> (H, W, 3) uint8 RGB."""
    if image.mode in _SIXTEEN_BIT:
        # 0..65535 -> 0..255 (65535 / 257 = 255), kept as gray in three channels.
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float64) / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "palette images with transparency ...": alpha is dropped anyway
        return np.asarray(image.convert("RGB"))


def decode_image(data: bytes, max_pixels: int, min_side: int) -> np.ndarray:
    """Decode an uploaded image file to (H, W, 3) uint8 RGB.

    Raises:
        InputError: see the module docstring for each status.
    """
    if not data:
        raise InputError(
            400,
            "empty body: send an image file (PNG, JPEG, WebP or BMP) as the multipart "
            "field 'file' or as the raw request body",
        )
    with warnings.catch_warnings():
        # Pillow's own bomb guard warns between its limit and twice that: make it an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=FORMATS)
        except UnidentifiedImageError:
            raise InputError(
                415, f"not an image ({len(data)} bytes, starting {data[:8]!r}): send a PNG, JPEG, WebP or BMP file"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(413, f"image refused as a decompression bomb ({exc})") from None
        except _DECODE_ERRORS as exc:
            raise InputError(422, f"unreadable image header ({exc}): send an intact PNG, JPEG, WebP or BMP") from None
        width, height = image.size
        if width * height > max_pixels:
            raise InputError(
                413,
                f"image is {width}x{height} = {width * height:,} pixels, over the limit of "
                f"{max_pixels:,} (serve.max_pixels): send a smaller image",
            )
        if min(width, height) < min_side:
            raise InputError(
                422,
                f"image is {width}x{height} pixels; both sides must be at least {min_side} "
                "(serve.min_side): there is nothing to segment in it",
            )
        try:
            image.load()  # a truncated file fails here ("image file is truncated")
            image = ImageOps.exif_transpose(image)
            return _to_rgb(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(413, f"image refused as a decompression bomb ({exc})") from None
        except _DECODE_ERRORS as exc:
            raise InputError(422, f"corrupt or truncated {image.format} file ({exc}): send the complete file") from None
