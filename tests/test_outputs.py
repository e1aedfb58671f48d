"""segflow.outputs: whole outputs or none, and no staging folder left by a killed stage."""

import signal
import subprocess
import sys

import pytest

from segflow.outputs import atomic_dir


def test_a_failed_block_leaves_no_output_and_no_staging(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "out") as staging:
        (staging / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_stage_leaves_staging_that_the_next_run_removes(tmp_path):
    target = tmp_path / "train"
    code = (
        "import sys, time; from pathlib import Path; from segflow.outputs import atomic_dir\n"
        "with atomic_dir(Path(sys.argv[1])) as s:\n"
        "    (s / 'model.pt').write_text('partial'); print(s, flush=True); time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True)
    staging = writer.stdout.readline().strip()
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert [p.name for p in tmp_path.iterdir()] == [staging.rsplit("/", 1)[1]]  # kill -9 left it

    # A live writer's staging folder is never touched.
    live = tmp_path / f".train.{__import__('os').getpid()}.abc"
    live.mkdir()
    with atomic_dir(target) as staging_now:
        (staging_now / "model.pt").write_text("whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "train"])
    assert (target / "model.pt").read_text() == "whole"
