"""Decode Label Studio's brush RLE (``brushlabels`` with ``"format": "rle"``).

Label Studio stores a brush mask as the RGBA pixels of a ``height x width`` canvas,
flattened (4 values a pixel) and packed by thi.ng's rle-pack, its bytes written as a
JSON list of ints. The bit stream, most significant bit first:

* a 32-bit count of values, a 5-bit word size minus 1, four 4-bit run-length field
  sizes minus 1;
* then runs until the count is reached: a flag bit, a 2-bit index choosing one of the
  four field sizes, a run length minus 1 in that many bits; a set flag is followed by
  one value repeated over the run, a clear one by each of the run's values.

label-studio-converter's decoder is not used: that package is archived (its code moved
into label-studio-sdk, which would replace the pinned opencv), and it pulls nltk, lxml
and more for these thirty lines.
"""

from __future__ import annotations

import numpy as np

from segflow.errors import AnnotationError

__all__ = ["decode_brush_rle"]

# Alpha values from this up count as painted (Label Studio paints 255; edges may blend).
_OPAQUE = 128


class _Bits:
    """Reads unsigned big-endian fields from a bit string, refusing to run past its end."""

    def __init__(self, data: bytes, where: str) -> None:
        self.bits = "".join(f"{byte:08b}" for byte in data)
        self.at, self.where = 0, where

    def read(self, size: int) -> int:
        end = self.at + size
        if end > len(self.bits):
            raise AnnotationError(
                f"{self.where}: the brush RLE ends early (bit {end} of {len(self.bits)}); the mask is "
                "truncated: export the annotations again from Label Studio",
                reason="bad geometry",
            )
        value = int(self.bits[self.at : end], 2)
        self.at = end
        return value


def decode_brush_rle(rle: object, height: int, width: int, where: str) -> np.ndarray:
    """The ``height x width`` bool mask (alpha >= 128) of a Label Studio brush RLE.

    Args:
        rle: the export's ``value.rle``, a list of ints 0..255.
        where: the task and result, for messages.

    Raises:
        AnnotationError: not a list of bytes, truncated, or not ``height * width * 4`` values.
    """
    if not isinstance(rle, list) or not rle or any(type(b) is not int or not 0 <= b <= 255 for b in rle):
        raise AnnotationError(
            f"{where}: value.rle is not a list of bytes (ints 0..255); export the annotations again from Label Studio",
            reason="bad geometry",
        )
    bits = _Bits(bytes(rle), where)
    count, word = bits.read(32), bits.read(5) + 1
    if count != height * width * 4:
        raise AnnotationError(
            f"{where}: the brush RLE holds {count} values, but the {width}x{height} image "
            f"(original_width x original_height) needs {height * width * 4} (RGBA); export again "
            "from Label Studio",
            reason="RLE size mismatch",
        )
    sizes = [bits.read(4) + 1 for _ in range(4)]
    out = np.empty(count, np.uint32 if word > 8 else np.uint8)
    i = 0
    while i < count:
        repeat = bits.read(1)
        end = min(i + 1 + bits.read(sizes[bits.read(2)]), count)
        if repeat:
            out[i:end] = bits.read(word)
        else:
            out[i:end] = [bits.read(word) for _ in range(end - i)]
        i = end
    return out.reshape(height, width, 4)[:, :, 3] >= _OPAQUE
