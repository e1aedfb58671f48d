"""A limit on the requests that decode and segment at once, with a short wait for a turn.

Each request that decodes an upload holds a bounded but large amount of memory (see
`segflow.serving.app`), so `serve.max_concurrent` of them run at once; another waits up to
`serve.queue_seconds` for a turn and is then refused with 503 and a Retry-After header, so
a burst of large photos slows the service down instead of exhausting the machine.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from weakref import WeakKeyDictionary

from fastapi import HTTPException

__all__ = ["Gate", "GiveBackMemory", "give_back_memory"]


def _malloc_trim() -> object | None:
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None


_TRIM = _malloc_trim()


def give_back_memory() -> None:
    """Return the heap pages freed by a finished request to the system (glibc's malloc_trim).

    A request's large arrays are freed when it ends, but glibc keeps the pages in the worker
    thread's arena for reuse; with requests landing on different threads, the service's
    resident size crept up by about 6 MB a request of a 49 MP photo (120 MB after 20).
    """
    if _TRIM is not None:
        _TRIM(0)


class Gate:
    """`async with gate.turn():` runs at most `slots` bodies at once; a caller that waited
    `wait_seconds` for a turn gets an HTTPException 503 with Retry-After instead."""

    def __init__(self, slots: int, wait_seconds: float) -> None:
        self.slots, self.wait_seconds = slots, wait_seconds
        # One semaphore per event loop: an asyncio semaphore belongs to the loop that first
        # waits on it, and one app may be served from several loops (tests, a restarted server).
        self._semaphores: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = WeakKeyDictionary()

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop not in self._semaphores:
            self._semaphores[loop] = asyncio.Semaphore(self.slots)
        return self._semaphores[loop]

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        semaphore = self._semaphore()
        if semaphore.locked():  # (a free one is taken at once: wait_for(..., 0) would refuse it)
            try:
                await asyncio.wait_for(semaphore.acquire(), self.wait_seconds)
            except TimeoutError:
                retry = max(1, math.ceil(self.wait_seconds))
                raise HTTPException(
                    503,
                    f"the server is busy: {self.slots} requests are being segmented (serve.max_concurrent) "
                    f"and this one waited {self.wait_seconds:g} s for a turn (serve.queue_seconds); "
                    f"retry in {retry} s",
                    headers={"Retry-After": str(retry)},
                ) from None
        else:
            await semaphore.acquire()
        try:
            yield
        finally:
            semaphore.release()


class GiveBackMemory:
    """ASGI middleware: after each POST (an upload, decoded and segmented), once its response
    is sent and its arrays are gone, `give_back_memory` in a worker thread."""

    def __init__(self, app) -> None:  # noqa: ANN001 (an ASGI app)
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http" and scope["method"] == "POST":
                await asyncio.to_thread(give_back_memory)
