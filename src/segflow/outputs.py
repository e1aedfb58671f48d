"""Stage outputs: folders that appear whole or not at all, and content hashes.

A stage writes into a temporary sibling folder and renames it into place only when
everything succeeded, so a failure never leaves a half-written `artifacts/...` that a
later stage (or DVC) could mistake for a result. A staging folder left by a killed
process (``kill -9``, power loss) is removed the next time its stage runs.

The small JSON files one stage writes and another reads (the plan, the manifest, the
dataset report) are typed contracts: pydantic models written by `write_contract` and read
by `read_contract`, which names the file and the key when one is missing, unknown or of
the wrong type.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from segflow.errors import SegflowError

__all__ = ["atomic_dir", "file_sha256", "Contract", "read_contract", "write_contract"]

log = logging.getLogger(__name__)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_stale(target: Path) -> None:
    """Remove staging folders of `target` whose process (named in the folder) is gone."""
    for folder in target.parent.glob(f".{target.name}.*"):
        pid = folder.name[len(target.name) + 2 :].split(".", 1)[0]
        if folder.is_dir() and pid.isdigit() and not _alive(int(pid)):
            log.info("removing %s, left by a process that no longer runs", folder)
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces `target` when the block succeeds.

    On any exception the temporary folder is removed and `target` is left absent
    (an old `target` is removed up front: it is stale once its stage reruns).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(target)
    if target.exists():
        shutil.rmtree(target)
    # The process id in the name tells a later run whether the writer still lives.
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.", dir=target.parent))
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


class Contract(BaseModel):
    """A JSON file passed between stages: its keys, in the order they are written; an
    unknown key is an error (a typo in a reader or a file of another version)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


C = TypeVar("C", bound=Contract)


def write_contract(contract: Contract, path: Path) -> None:
    """Write `contract` as indented JSON, with exactly the keys it was given or read with
    (an optional key left unset stays absent, one set to None is written as null)."""
    Path(path).write_text(json.dumps(contract.model_dump(mode="json", exclude_unset=True, by_alias=True), indent=1))


def read_contract(kind: type[C], path: Path) -> C:
    """Read `path` as a `kind`.

    Raises:
        SegflowError: the file is missing or not JSON, or a key is missing, unknown or of
            the wrong type; the message names the file and each key, and the stage to rerun.
    """
    path = Path(path)
    try:
        return kind.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise SegflowError(f"{path}: cannot be read ({exc.strerror}): rerun the stage that writes it") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"key {'.'.join(map(str, error['loc'])) or '(top)'!r}: {error['msg']}" for error in exc.errors()[:5]
        )
        raise SegflowError(
            f"{path} is not a valid {kind.__name__} ({problems}): written by another segflow version "
            "or edited by hand; rerun the stage that writes it (`dvc repro`)"
        ) from None
