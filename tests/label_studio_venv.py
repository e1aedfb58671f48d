"""Label Studio from PyPI in a virtual environment of its own, for the tests that run it
(tests/serving/test_label_studio_backend.py).

`make test` builds it while it builds the project's own venv (`python3 tests/label_studio_venv.py`),
so the test run does not spend a worker's minute on pip; the test builds it itself where it is
missing. It is kept between runs: set SEGFLOW_LABEL_STUDIO_VENV to put it elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

#: The Label Studio release the tests run (pinned: its API and ML protocol move between releases).
VERSION = "1.23.2"
#: Its venv (about 1 GB), kept between runs.
VENV = Path(os.environ.get("SEGFLOW_LABEL_STUDIO_VENV", "/tmp/segflow-label-studio-venv"))
READY = VENV / f".segflow-label-studio-{VERSION}"


class NotInstalled(Exception):
    """Label Studio could not be installed; the message says why."""


def ensure() -> Path:
    """Label Studio's python, installed into `VENV` if it is not there yet (about 70 s of pip).

    Raises:
        NotInstalled: venv or pip failed (no network, no disk, ...); a half-finished venv is removed.
    """
    python = VENV / "bin" / "python"
    if READY.is_file():
        return python
    if VENV.exists():
        shutil.rmtree(VENV)  # a half-finished install
    steps = (
        [sys.executable, "-m", "venv", str(VENV)],
        # --no-compile: the one server compiles what it imports; compiling all of its 11,000
        # modules at install costs about 20 s of CPU.
        [str(python), "-m", "pip", "install", "--quiet", "--no-compile", f"label-studio=={VERSION}"],
    )
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=1200)
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(VENV, ignore_errors=True)
            raise NotInstalled(f"Label Studio {VERSION} could not be installed into {VENV}: {exc}") from None
        if done.returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            raise NotInstalled(f"Label Studio {VERSION} could not be installed into {VENV}: {done.stderr[-500:]}")
    READY.touch()
    return python


if __name__ == "__main__":
    try:
        print(f"Label Studio {VERSION}: {ensure()}")
    except NotInstalled as exc:
        sys.exit(f"{exc}\n(tests/serving/test_label_studio_backend.py will try again, or say it is skipped)")
