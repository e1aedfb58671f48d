"""Request bodies, received before a request waits for its turn at the gate, and bounded:

* in size: more than the upload limit (serve.max_upload_bytes) is refused with 413 as soon
  as the Content-Length says so or the bytes pass it;
* in time: a body not fully received within serve.upload_seconds (a stalled or trickled
  upload, "slowloris") is cut off with 408, so it holds neither memory nor a slot;
* together: the bytes held by every request still uploading or waiting for its turn are
  capped (serve.max_buffered_bytes); one that would pass the cap gets 503 with Retry-After;
* in memory: past 1 MiB a body goes to a temporary file (Starlette spools multipart file
  parts the same way), and the image is decoded from that file, never from a copy in memory.

`receive_upload` yields the uploaded file positioned at its start, and frees its bytes from
the budget when the request is done.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from tempfile import SpooledTemporaryFile
from typing import BinaryIO

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from segflow.errors import ConfigError
from segflow.serving.decode import InputError

__all__ = ["UPLOAD_ENV", "SPOOL_BYTES", "UploadBudget", "receive_upload", "upload_limit"]

#: Environment variable that overrides serve.max_upload_bytes on one machine.
UPLOAD_ENV = "SEGFLOW_MAX_UPLOAD_BYTES"
#: A raw body past this many bytes is written to a temporary file rather than kept in memory.
SPOOL_BYTES = 2**20


def upload_limit(max_upload_bytes: int) -> int:
    """The request body limit: $SEGFLOW_MAX_UPLOAD_BYTES, else serve.max_upload_bytes."""
    raw = os.environ.get(UPLOAD_ENV)
    if raw is None:
        return max_upload_bytes
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError(f"{UPLOAD_ENV}={raw!r}: give a positive number of bytes, e.g. 20000000")
    return int(raw)


@dataclass
class UploadBudget:
    """Bytes of request bodies held at once by one app (all on its one event loop)."""

    limit: int  #: bytes (serve.max_buffered_bytes)
    upload_seconds: float  #: what a whole body may take (serve.upload_seconds)
    held: int = field(default=0)

    def take(self, count: int) -> None:
        if self.held + count > self.limit:
            raise InputError(
                503,
                f"the server is holding {self.held:,} bytes of uploads in progress, and this one would pass "
                f"the {self.limit:,} it allows at once (serve.max_buffered_bytes); retry in a few seconds",
                headers={"Retry-After": "5"},
            )
        self.held += count


async def _limited(request: Request, limit: int, budget: UploadBudget, taken: list[int]) -> AsyncIterator[bytes]:
    """The request body in chunks, stopped with a 413 as soon as it passes `limit` bytes;
    every chunk is counted in `budget` (and in taken[0], to give back)."""
    declared = request.headers.get("content-length", "")
    too_big = f"is over the upload limit of {limit:,} bytes (serve.max_upload_bytes, or {UPLOAD_ENV})"
    if declared.isdigit() and int(declared) > limit:
        raise InputError(413, f"request body of {int(declared):,} bytes {too_big}")
    async for chunk in request.stream():
        if taken[0] + len(chunk) > limit:
            raise InputError(413, f"request body {too_big}")
        budget.take(len(chunk))
        taken[0] += len(chunk)
        yield chunk


async def _spool(chunks: AsyncIterator[bytes]) -> BinaryIO:
    spool = SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - closed by receive_upload
    try:
        async for chunk in chunks:
            spool.write(chunk)
    except BaseException:
        spool.close()
        raise
    spool.seek(0)
    return spool


async def _multipart_file(request: Request, chunks: AsyncIterator[bytes], forms: list) -> BinaryIO:
    try:
        form = await MultiPartParser(request.headers, chunks, max_files=1, max_fields=8).parse()
    except MultiPartException as exc:
        raise InputError(400, f"malformed multipart body ({exc}): send one file in the field 'file'") from None
    forms.append(form)
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        fields = sorted(set(form.keys()))
        raise InputError(
            422,
            f"the multipart body has no file in the field 'file' (its fields: {fields}): send the image "
            "as the field 'file', e.g. curl -F file=@photo.jpg",
        )
    await upload.seek(0)
    return upload.file


@asynccontextmanager
async def receive_upload(request: Request, limit: int, budget: UploadBudget) -> AsyncIterator[BinaryIO]:
    """The uploaded file (the multipart form's field 'file', or the whole raw body) at its start.

    Raises:
        InputError: 413 too large, 408 not received in time, 503 over the shared budget,
            400/422 a multipart body without the file.
    """
    taken, forms, spool = [0], [], None
    chunks = _limited(request, limit, budget, taken)
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    try:
        try:
            async with asyncio.timeout(budget.upload_seconds):
                spool = await (_multipart_file(request, chunks, forms) if multipart else _spool(chunks))
        except TimeoutError:
            raise InputError(
                408,
                f"the request body was not received within {budget.upload_seconds:g} s (serve.upload_seconds; "
                f"{taken[0]:,} bytes arrived): send it faster, or over a better connection",
            ) from None
        yield spool
    finally:
        budget.held -= taken[0]
        if multipart:
            for form in forms:
                await form.close()
        elif spool is not None:
            spool.close()
