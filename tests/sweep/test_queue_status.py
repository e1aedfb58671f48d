"""`dvc queue status` asked while DVC's workers write its JSON files."""

from __future__ import annotations

import json

import pytest

from segflow.errors import SegflowError
from segflow.sweep import queue


def _half_written() -> json.JSONDecodeError:
    """What `json.loads` raises on an empty file."""
    return json.JSONDecodeError("Expecting value", "", 0)


def test_a_half_written_queue_file_is_asked_again_then_reported(tmp_path, monkeypatch):
    view = queue.queue_view([("abc1234", "tpe-1", "Running")], 1)
    answers = [_half_written(), view]
    calls = []

    def ask(root):
        calls.append(root)
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(queue, "_ask_dvc", ask)
    monkeypatch.setattr(queue.time, "sleep", lambda seconds: None)
    assert queue.queue_status(tmp_path) == view and len(calls) == 2
    # Still unreadable after STATUS_TRIES: the error names the folder and DVC's message.
    answers[:] = [_half_written()] * queue.STATUS_TRIES
    calls.clear()
    with pytest.raises(SegflowError, match=r"`dvc queue status` failed in .*Expecting value"):
        queue.queue_status(tmp_path)
    assert len(calls) == queue.STATUS_TRIES
