"""The model being served, swapped whole when its source changes, never mid-request.

A request reads `ModelHolder.current` once and uses that predictor to the end; a reload
loads the new model beside the old one (requests keep being answered meanwhile) and then
replaces the reference in one assignment, which is atomic in Python. The old model is
freed when the last request holding it finishes, so nothing in flight is dropped.

Reloads happen on `POST /reload`, and every `poll_seconds` from a background thread when
the source can move (an alias, a file). A failed reload keeps the current model and is
reported by `GET /health` until a later reload succeeds, whether that one swaps the model
or finds the source naming the served model again (@champion moved back).
"""

from __future__ import annotations

import logging
import threading

from segflow.runtime.source import ModelSource

__all__ = ["ModelHolder"]

log = logging.getLogger(__name__)


class ModelHolder:
    """Holds the current predictor of `source`; loads it on creation."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.key, self.current = source.load()  # current: a segflow.runtime.predictor.Predictor
        self.reloads = 0
        self.last_error: str | None = None
        self._reload_lock = threading.Lock()  # one reload at a time (poll thread vs POST /reload)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def reload(self, force: bool = False) -> bool:
        """Load the source's model if it changed (or `force`); returns whether it swapped.

        Success clears `last_error`; a failure sets it and raises whatever loading raised,
        and the current model stays in place.
        """
        with self._reload_lock:
            try:
                key = self.source.key()
                swap = key != self.key or force
                if swap:
                    key, predictor = self.source.load()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise
            # Either way the source is healthy again: an old failure no longer describes it.
            self.last_error = None
            if not swap:
                return False
            previous = self.current.info.version
            self.key, self.current = key, predictor  # the swap: requests after this line see the new model
            self.reloads += 1
            log.info("serving %s version %s (was %s)", predictor.info.name, predictor.info.version, previous)
            return True

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                self.reload()
            except Exception:  # noqa: BLE001 - any failure must leave the service serving the old model
                log.warning(
                    "reload of %s failed, still serving version %s: %s",
                    self.source.spec,
                    self.current.info.version,
                    self.last_error,
                )

    def start_polling(self, seconds: float) -> None:
        """Check the source every `seconds` in a daemon thread (no-op if 0 or it cannot move)."""
        if seconds <= 0 or not self.source.moves or self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, args=(seconds,), name="segflow-model-poll", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
