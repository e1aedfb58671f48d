"""Extracting an archive, member by member, within limits: no paths out, no bombs.

A 2.2 MB zip can hold 2 GiB of zeros (and a crafted one far more). `unpack` writes each
member in chunks and counts the bytes it actually wrote (never the sizes a header
claims) and the files, against `ExtractLimits` (``fetch.max_extract_bytes``,
``fetch.max_extract_files``, ``fetch.max_compression_ratio``). Over a limit it stops
at once and raises, naming the archive and the key; the caller deletes the partial
extraction (`segflow.data.sources.extract` extracts into a staging folder it removes,
`segflow predict` into a temporary one).

Paths: a zip member's ``..``, absolute and drive parts are dropped, as `zipfile` does;
a tar member goes through tarfile's ``data`` filter (no links or paths out, no devices).
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from segflow.config import FetchParams
from segflow.errors import SourceError

__all__ = ["ARCHIVE_SUFFIXES", "ExtractLimits", "unpack"]

#: File endings read as archives.
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
_CHUNK = 1 << 20
# The ratio is only judged past this many bytes written: a small archive of text (a VIA
# CSV of empty regions) may compress 200x and is no threat.
_RATIO_FLOOR = 64 << 20


@dataclass(frozen=True)
class ExtractLimits:
    """Limits of one extraction: bytes written, files written, bytes written per archive byte."""

    max_bytes: int = FetchParams.model_fields["max_extract_bytes"].default
    max_files: int = FetchParams.model_fields["max_extract_files"].default
    max_ratio: float = FetchParams.model_fields["max_compression_ratio"].default

    @classmethod
    def of(cls, fetch: FetchParams) -> ExtractLimits:
        """The limits params.yaml's fetch section sets."""
        return cls(fetch.max_extract_bytes, fetch.max_extract_files, fetch.max_compression_ratio)


class _Counter:
    """Running totals of an extraction, refusing as soon as one passes its limit."""

    def __init__(self, archive: Path, limits: ExtractLimits) -> None:
        self.archive, self.limits = archive, limits
        self.size = max(1, archive.stat().st_size)
        self.bytes = self.files = 0

    def _refuse(self, what: str, key: str) -> None:
        raise SourceError(
            f"{self.archive}: extracting it {what}; the partial extraction was deleted. A decompression "
            f"bomb? If the archive is genuine, raise {key} in params.yaml",
            reason="archive too large",
        )

    def file(self) -> None:
        """Count one more entry (file, folder or link)."""
        self.files += 1
        if self.files > self.limits.max_files:
            key = "fetch.max_extract_files"
            self._refuse(f"makes more than {self.limits.max_files:,} files, the limit ({key})", key)

    def add(self, count: int) -> None:
        """Count `count` more bytes about to be written."""
        self.bytes += count
        if self.bytes > self.limits.max_bytes:
            key = "fetch.max_extract_bytes"
            self._refuse(f"writes more than {self.limits.max_bytes:,} bytes, the limit ({key})", key)
        ratio = self.bytes / self.size
        if self.bytes > _RATIO_FLOOR and ratio > self.limits.max_ratio:
            key = "fetch.max_compression_ratio"
            self._refuse(
                f"writes {self.bytes:,} bytes from {self.size:,} ({ratio:.0f}x), over the limit "
                f"({self.limits.max_ratio:g}x, {key})",
                key,
            )

    def copy(self, source: IO[bytes], target: Path) -> None:
        """Write `source` to `target` a chunk at a time, counting every byte."""
        self.file()
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            while chunk := source.read(_CHUNK):
                self.add(len(chunk))  # before writing: a refused chunk never reaches the disk
                out.write(chunk)


def _zip_target(into: Path, name: str) -> Path | None:
    """Where a zip member goes: its path less ``..``, absolute and drive parts (as
    `zipfile.ZipFile.extract`); None for a name that is nothing once cleaned."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".", "..")]
    if parts and len(parts[0]) == 2 and parts[0][1] == ":":  # a Windows drive, C:
        parts = parts[1:]
    return into.joinpath(*parts) if parts else None


def _unzip(archive: Path, into: Path, counter: _Counter) -> None:
    with zipfile.ZipFile(archive) as bundle:
        for member in bundle.infolist():
            target = _zip_target(into, member.filename)
            if target is None:
                continue
            if member.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            with bundle.open(member) as source:
                counter.copy(source, target)


def _untar(archive: Path, into: Path, counter: _Counter) -> None:
    with tarfile.open(archive) as bundle:
        for member in bundle:
            member = tarfile.data_filter(member, str(into))  # refuses paths and links out of `into`
            if member is None:
                continue
            if member.isfile():
                source = bundle.extractfile(member)
                if source is None:
                    continue
                target = into / member.name
                with source:
                    counter.copy(source, target)
                os.chmod(target, member.mode or 0o644)
            else:  # folders and (checked) links: nothing to count but the entry
                counter.file()
                bundle.extract(member, into, filter="data")


def unpack(archive: Path, into: Path, limits: ExtractLimits | None = None) -> None:
    """Extract `archive` into the folder `into`, refusing paths that leave it and
    extractions over `limits` (default: params' defaults). On error, what this call wrote
    may remain in `into`: extract into a folder to delete on failure.

    Raises:
        SourceError: the archive is unreadable, or over a limit (naming its key).
    """
    counter = _Counter(archive, limits or ExtractLimits())
    into.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            _unzip(archive, into, counter)
        else:
            _untar(archive, into, counter)
    except (OSError, zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise SourceError(
            f"{archive}: cannot extract the archive ({exc}); is it complete and a {'/'.join(ARCHIVE_SUFFIXES)} file?",
            reason="unreadable file",
        ) from exc
