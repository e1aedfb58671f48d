"""Stage outputs: folders that appear whole or not at all, and content hashes.

A stage writes into a temporary sibling folder and renames it into place only when
everything succeeded, so a failure never leaves a half-written `artifacts/...` that a
later stage (or DVC) could mistake for a result.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_dir", "file_sha256"]


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `target` when the block succeeds.

    On any exception the temporary folder is removed and `target` is left absent
    (an old `target` is removed up front: it is stale once its stage reruns).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def file_sha256(*paths: Path) -> str:
    """One sha256 over the bytes of `paths`, in order (identifies a file or a frozen split)."""
    digest = hashlib.sha256()
    for path in paths:
        with Path(path).open("rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
