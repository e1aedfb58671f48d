"""Near-duplicate photos: a perceptual hash per image, the pairs close by it, their groups.

Identical files share a sha256; a photo saved again (re-encoded JPEG, resized, brightened
a little, renamed ``x(1).jpg``) does not, but keeps its perceptual hash: imagehash's
``phash``, 64 bits from the low frequencies of the image's DCT, compared by Hamming
distance. Re-encoding or resizing moves it by 0-4 bits, two different photos by ~32.

Fetch stores each image's hash in the manifest and lists the pairs within
``fetch.near_duplicate_distance`` in the report (`near_duplicate_pairs`); with
``preprocess.near_duplicates: group`` (the default) preprocess keeps each connected group of
them in one split, as it keeps identical images (`group_keys`), and records each image's
group in ``split.json`` for intervals that resample groups (`segflow.metrics.group_confusions`).
Everything is a function of the hashes and file names, so the same data gives the same
pairs and groups.
"""

from __future__ import annotations

from collections.abc import Sequence

import imagehash
import numpy as np
from PIL import Image

from segflow.data.manifest import Manifest, ManifestFile, NearDuplicate

__all__ = ["NEAR_DUPLICATE_CHOICES", "perceptual_hash", "near_duplicate_pairs", "group_keys", "split_keys"]

#: Values of ``preprocess.near_duplicates``.
NEAR_DUPLICATE_CHOICES = ("report", "group")


def perceptual_hash(image: np.ndarray) -> str:
    """The 64-bit pHash of an (H, W, 3) uint8 RGB image, as 16 hex digits."""
    return str(imagehash.phash(Image.fromarray(image)))


def _unique(files: Sequence[ManifestFile]) -> list[ManifestFile]:
    """One manifest entry per sha256 (identical files are grouped anyway)."""
    seen: dict[str, ManifestFile] = {}
    for entry in files:
        seen.setdefault(entry.sha256, entry)
    return list(seen.values())


def near_duplicate_pairs(files: Sequence[ManifestFile], max_distance: int) -> list[NearDuplicate]:
    """Pairs of different files (fetch manifest ``files`` entries) whose pHashes differ in at most `max_distance` bits.

    Returns:
        The pairs (images a, b with a < b, `distance` d) sorted by (d, a, b); none
        when `max_distance` is below 0. An image stands for every file identical to it.
    """
    entries = _unique(files)
    if max_distance < 0 or len(entries) < 2:
        return []
    bits = np.array([int(entry.phash, 16) for entry in entries], dtype=np.uint64)
    pairs = []
    for i in range(len(entries) - 1):  # one row of the distance matrix at a time: memory O(n)
        distances = np.bitwise_count(bits[i + 1 :] ^ bits[i])
        for j in np.flatnonzero(distances <= max_distance):
            a, b = sorted((entries[i].filename, entries[i + 1 + j].filename))
            pairs.append(NearDuplicate(images=(a, b), distance=int(distances[j])))
    return sorted(pairs, key=lambda pair: (pair.distance, *pair.images))


def group_keys(files: Sequence[ManifestFile], pairs: Sequence[NearDuplicate]) -> dict[str, str]:
    """Per file name, a key shared by identical files and by near duplicates joined through `pairs`.

    The key is the smallest sha256 of the group (so it is the file's own sha256 when it has
    no near duplicate), for `segflow.data.splits.assign_splits`.
    """
    sha = {entry.filename: entry.sha256 for entry in files}
    parent = {digest: digest for digest in sha.values()}

    def root(digest: str) -> str:
        while parent[digest] != digest:
            parent[digest] = parent[parent[digest]]
            digest = parent[digest]
        return digest

    for pair in pairs:
        a, b = (root(sha[name]) for name in pair.images)
        parent[max(a, b)] = min(a, b)
    return {name: root(digest) for name, digest in sha.items()}


def split_keys(manifest: Manifest, mode: str) -> dict[str, str]:
    """Per file name of a fetch manifest, the key images share a split by: its sha256, or with
    `mode` ``"group"`` (``preprocess.near_duplicates``) its group of near duplicates."""
    if mode not in NEAR_DUPLICATE_CHOICES:
        raise ValueError(f"preprocess.near_duplicates is {mode!r}; choose from {list(NEAR_DUPLICATE_CHOICES)}")
    if mode == "group":
        return group_keys(manifest.files, manifest.near_duplicates)
    return {entry.filename: entry.sha256 for entry in manifest.files}
