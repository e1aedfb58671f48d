"""Uploaded bytes -> an RGB image, or a refusal that says what is wrong and how to fix it.

Each refusal is an `InputError` carrying the HTTP status the service answers with:

* 400: empty body;
* 413: more bytes than the upload limit, or more pixels than the pixel limit: the size
  is read from the header before anything is decoded, so a decompression bomb (a small
  file that decodes to gigapixels) never gets decoded;
* 415: not an image, or not PNG, JPEG, WebP or BMP;
* 422: an image that cannot be used: truncated or corrupt (a file that starts as one of
  `FORMATS` does but that Pillow cannot open, e.g. a PNG header with a bad checksum, is
  corrupt, not of an unknown kind), or a side under ``min_side``.

16-bit, grayscale, palette, CMYK and RGBA images are converted to 8-bit RGB (alpha
dropped, as `segflow.registry.pyfunc` does), and the EXIF orientation is applied, so the mask lines
up with the picture a browser shows.

Memory: Pillow's decoded image (at most 4 bytes a pixel: RGB is stored as RGBX, 16-bit gray
as 2) is converted into the (H, W, 3) result a band of rows at a time and then released, so
decoding peaks at about 7 bytes per pixel; never a float copy of the whole image.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from typing import BinaryIO, TypeVar

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from segflow.pixel_limit import over_limit

__all__ = ["FORMATS", "InputError", "DecodedImage", "decode_image", "open_image"]

T = TypeVar("T")

#: Formats accepted (Pillow's names): what cameras, phones and browsers produce. (Pillow
#: opens the JPEG variant some cameras write, MPO, through JPEG: its first view is used.)
FORMATS = ("PNG", "JPEG", "WEBP", "BMP")
#: Pillow modes that hold 16-bit samples (PNG 16-bit grayscale opens as one of them).
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
#: What a corrupt file makes Pillow's decoders raise: OSError, SyntaxError, ValueError,
#: EOFError, struct.error, IndexError, ... A hostile file can reach any of them, and a file
#: that cannot be decoded is the sender's problem, never a 500: so every Exception.
_DECODE_ERRORS = (Exception,)
#: The first bytes of each of `FORMATS`, and what else must hold: WebP is RIFF, a size, then
#: WEBP; BMP's two letters are too common alone, so its info header size (bytes 14-17) must be a known one.
_SIGNATURES = {
    "PNG": (b"\x89PNG\r\n\x1a\n", lambda data: True),
    "JPEG": (b"\xff\xd8\xff", lambda data: True),
    "WEBP": (b"RIFF", lambda data: data[8:12] == b"WEBP"),
    "BMP": (b"BM", lambda data: int.from_bytes(data[14:18], "little") in (12, 40, 52, 56, 64, 108, 124)),
}
#: Pixels converted at a time (a band of rows): 1 MP is at most 11 MB of temporaries.
_BAND_PIXELS = 1_000_000


class InputError(Exception):
    """A request the service refuses: `status` is the HTTP status, the message the reason,
    `headers` any the answer needs (Retry-After)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.headers = status, headers


def _claimed_format(data: bytes) -> str | None:
    """The format of `FORMATS` whose signature `data` starts with, or None."""
    for name, (signature, rest) in _SIGNATURES.items():
        if data.startswith(signature) and rest(data):
            return name
    return None


def _orient(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """`rgb` turned as EXIF `orientation` (1-8) says, as `ImageOps.exif_transpose` turns it."""
    turned = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }.get(orientation)
    return rgb if turned is None else np.ascontiguousarray(turned(rgb))


def _band(image: Image.Image, top: int, bottom: int) -> np.ndarray:
    """Rows top..bottom of a loaded Pillow image of any mode as (h, W, 3) uint8 RGB, converted
    `_BAND_PIXELS` at a time into the result (Pillow's crop and conversion take 8 bytes a
    pixel: never of more than that many pixels)."""
    width = image.size[0]
    rgb = np.empty((bottom - top, width, 3), np.uint8)
    step = max(1, _BAND_PIXELS // width)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "palette images with transparency ...": alpha is dropped anyway
        for start in range(top, bottom, step):
            band = image.crop((0, start, width, min(start + step, bottom)))
            if image.mode in _SIXTEEN_BIT:
                # 0..65535 -> 0..255, rounded (x / 257 is never halfway), kept as gray in three channels.
                gray = (np.asarray(band).astype(np.int64) + 128) // 257
                rgb[start - top : start - top + step] = np.clip(gray, 0, 255).astype(np.uint8)[:, :, None]
            else:
                rgb[start - top : start - top + step] = np.asarray(band.convert("RGB"))
    return rgb


def _to_rgb(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image of any mode -> (H, W, 3) uint8 RGB, upright; closes `image`.

    Converted a band of rows at a time into the result, so the only full-size arrays are
    Pillow's (released here) and the result.
    """
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    rgb = _band(image, 0, image.size[1])
    image.close()  # frees Pillow's copy now, not when the garbage collector gets to it
    return _orient(rgb, orientation)


class DecodedImage:
    """A decoded upload whose RGB rows are handed out a band at a time (`rows`), so a caller
    that shrinks it (`segflow.inference.segment.Segmenter.scaled_rows`) never holds a full-size
    RGB copy beside Pillow's. An image turned by its EXIF orientation is made upright (and
    full-size) at once. `close` frees Pillow's copy."""

    def __init__(self, image: Image.Image) -> None:
        self._image: Image.Image | None = image
        self._upright: np.ndarray | None = None
        if image.getexif().get(ExifTags.Base.Orientation, 1) in range(2, 9):
            self._upright, self._image = _to_rgb(image), None
        self.height, self.width = self._upright.shape[:2] if self._upright is not None else image.size[::-1]

    def rows(self, top: int, bottom: int) -> np.ndarray:
        """Rows top..bottom of the upright image, (bottom - top, width, 3) uint8 RGB."""
        if self._upright is not None:
            return self._upright[top:bottom]
        if self._image is None:
            raise ValueError("the decoded image was closed")
        try:
            return _band(self._image, top, bottom)
        except _DECODE_ERRORS as exc:
            raise InputError(422, f"corrupt {self._image.format} file ({exc}): send the complete file") from None

    def close(self) -> None:
        if self._image is not None:
            self._image.close()
        self._image = self._upright = None


def decode_image(source: bytes | BinaryIO, max_pixels: int, min_side: int) -> np.ndarray:
    """Decode an uploaded image file (its bytes, or a binary file at its start, e.g. the
    service's spooled upload, which Pillow then reads without a copy in memory) to (H, W, 3) uint8 RGB.

    Raises:
        InputError: see the module docstring for each status.
    """
    return _decode(source, max_pixels, min_side, _to_rgb)


def open_image(source: bytes | BinaryIO, max_pixels: int, min_side: int) -> DecodedImage:
    """`decode_image`'s checks and decoding, the RGB rows handed out a band at a time
    (`DecodedImage.rows`); the caller closes it.

    Raises:
        InputError: see the module docstring for each status.
    """
    return _decode(source, max_pixels, min_side, DecodedImage)


def _decode(source: bytes | BinaryIO, max_pixels: int, min_side: int, finish: Callable[[Image.Image], T]) -> T:
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    start = stream.tell()
    data = stream.read(32)  # enough for every signature check and error message below
    size = stream.seek(0, io.SEEK_END) - start
    stream.seek(start)
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
            image = Image.open(stream, formats=FORMATS)
        except UnidentifiedImageError:
            claimed = _claimed_format(data)
            if claimed is not None:  # Pillow's PNG reader, e.g., gives up on a bad IHDR checksum
                raise InputError(
                    422, f"corrupt {claimed} file: it starts as one but cannot be read; send an intact file"
                ) from None
            raise InputError(
                415, f"not an image ({size} bytes, starting {data[:8]!r}): send a PNG, JPEG, WebP or BMP file"
            ) from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(413, f"image refused as a decompression bomb ({exc})") from None
        except _DECODE_ERRORS as exc:
            raise InputError(422, f"unreadable image header ({exc}): send an intact PNG, JPEG, WebP or BMP") from None
        width, height = image.size
        too_many = over_limit(width, height, max_pixels, "serve.max_pixels")  # the intake paths' check too
        if too_many:
            raise InputError(413, f"{too_many}: send a smaller image")
        if min(width, height) < min_side:
            raise InputError(
                422,
                f"image is {width}x{height} pixels; both sides must be at least {min_side} "
                "(serve.min_side): there is nothing to segment in it",
            )
        try:
            image.load()  # a truncated file fails here ("image file is truncated")
            return finish(image)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise InputError(413, f"image refused as a decompression bomb ({exc})") from None
        except _DECODE_ERRORS as exc:
            raise InputError(422, f"corrupt or truncated {image.format} file ({exc}): send the complete file") from None
