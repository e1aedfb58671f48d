"""The fetch snapshot's ``manifest.json``: what was fetched, one entry per image file.

Written by `segflow.data.fetch` (`write_manifest`), read by rasterize (each image's size,
the format) and preprocess (the hashes that keep identical and near-identical images in
one split) through `read_manifest`, which names the file and the key when one is missing,
unknown or of the wrong type.
"""

from __future__ import annotations

from pathlib import Path

from segflow.outputs import Contract, read_contract, write_contract

__all__ = ["MANIFEST", "ManifestFile", "NearDuplicate", "Manifest", "read_manifest", "write_manifest"]

MANIFEST = "manifest.json"


class ManifestFile(Contract):
    """One image of the snapshot: its name (its path inside the source), size in pixels,
    region count, the sha256 of its bytes and its 64-bit pHash (16 hex digits)."""

    filename: str
    width: int
    height: int
    regions: int
    sha256: str
    phash: str


class NearDuplicate(Contract):
    """Two different files whose pHashes are `distance` bits apart (`segflow.data.near_duplicates`)."""

    images: tuple[str, str]
    distance: int


class Manifest(Contract):
    """``manifest.json``: the source, the annotation files read and their format ("+"-joined
    when several), the counts kept, the image files and the near-duplicate pairs."""

    source: str
    annotation_file: str
    annotation_files: list[str]
    format: str
    images: int
    regions: int
    regions_per_class: dict[str, int]
    images_without_regions: int
    files: list[ManifestFile]
    near_duplicates: list[NearDuplicate]


def read_manifest(folder: Path) -> Manifest:
    """The manifest of the fetch snapshot `folder`."""
    return read_contract(Manifest, Path(folder) / MANIFEST)


def write_manifest(manifest: Manifest, folder: Path) -> None:
    """Write `manifest` into the fetch snapshot `folder`."""
    write_contract(manifest, Path(folder) / MANIFEST)
