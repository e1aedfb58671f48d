"""Encode a mask as Label Studio's brush RLE, the ``value.rle`` of a ``brushlabels`` result.

The format (thi.ng's rle-pack over the RGBA pixels of the canvas, each painted pixel
255 in all four channels, as Label Studio's own converter writes it) is described in
`segflow.data.readers.label_studio_rle`, which decodes it; the two round-trip exactly.

Only repeated runs are written (flag bit 1): a mask is long runs of 0 and 255, so
literal runs would never be shorter. The four run-length field sizes are chosen so short
runs (object edges) cost few bits and long runs (2^16 values at most a field) few.
"""

from __future__ import annotations

import numpy as np

__all__ = ["encode_brush_rle"]

#: Word size of the values (RGBA bytes).
_WORD = 8
#: Bits of the four run-length fields (a run of n values stores n - 1); the format
#: stores each size in 4 bits, so 16 is the largest: longer runs take several fields.
_SIZES = (3, 6, 10, 16)
_LONGEST = 1 << _SIZES[-1]


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts' values, lengths) of the runs of equal values in 1-D `values`."""
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], change))
    lengths = np.diff(np.concatenate((starts, [values.size])))
    return values[starts], lengths


def encode_brush_rle(mask: np.ndarray) -> list[int]:
    """The brush RLE (a list of ints 0..255) of (H, W) bool `mask`: painted where True."""
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(f"a brush mask is a non-empty 2-D array, got shape {mask.shape}")
    # Each pixel is 4 equal bytes (R, G, B, A), so a pixel run of n is a value run of 4n.
    values, lengths = _runs(np.asarray(mask, bool).ravel())
    fields = [f"{mask.size * 4:032b}", f"{_WORD - 1:05b}", *(f"{size - 1:04b}" for size in _SIZES)]
    for value, pixels in zip(values.tolist(), (4 * lengths).tolist(), strict=True):
        byte = f"{255 if value else 0:08b}"
        while pixels > 0:
            run = min(pixels, _LONGEST)
            index = next(i for i, size in enumerate(_SIZES) if run - 1 < 1 << size)
            fields.append(f"1{index:02b}{run - 1:0{_SIZES[index]}b}{byte}")
            pixels -= run
    bits = "".join(fields)
    bits += "0" * (-len(bits) % 8)  # the decoder stops at the count; the last byte is padded
    return list(int(bits, 2).to_bytes(len(bits) // 8, "big"))
