"""The registered model runs where segflow is not installed.

A fresh virtual environment gets only the model's own requirements.txt; there,
``mlflow.pyfunc.load_model`` on the downloaded model folder imports segflow from the
model's ``code/`` (its code_paths) and predicts the same mask, bit for bit, as the model
loaded in this process. So the pinned requirements are complete and the code the model
carries is its whole inference closure.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

from segflow.registry.versions import load_pyfunc

log = logging.getLogger(__name__)

#: Run in the fresh environment: predict the image, save the mask, say where segflow came from.
PREDICT = """
import sys
import mlflow, numpy as np
model = mlflow.pyfunc.load_model(sys.argv[1])
np.save(sys.argv[3], model.predict(np.load(sys.argv[2])))
print(sys.modules["segflow"].__file__)
"""


def _run(command: list[str], env: dict[str, str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _tail(result: subprocess.CompletedProcess, lines: int = 30) -> str:
    return "\n".join((result.stdout + result.stderr).splitlines()[-lines:])


@pytest.mark.slow(seconds=150)  # builds a virtual environment of several GB (torch with its CUDA libraries)
@pytest.mark.timeout(2400)  # pip's 1500 s for those downloads, and the rest
def test_the_registered_model_predicts_in_a_fresh_environment_without_segflow(register_version, tmp_path):
    version = register_version(None)  # random weights: the mask is not one class everywhere
    model_dir = Path(mlflow.artifacts.download_artifacts(f"models:/tiny/{version}", dst_path=str(tmp_path / "model")))
    image = np.random.default_rng(0).integers(0, 256, (45, 70, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    expected = load_pyfunc(str(model_dir)).predict(image)
    assert expected.shape == (45, 70) and expected.dtype == np.uint8 and len(np.unique(expected)) > 1

    # Nothing of this process leaks in: no PYTHONPATH, no inherited virtual environment,
    # and cwd is tmp_path (not the repository, whose src/ holds segflow).
    env = {"PATH": os.environ["PATH"], "HOME": os.environ["HOME"]}
    env |= {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    # pip alone also gets the index settings of this machine or CI (mirrors, proxies).
    pip_env = env | {k: v for k, v in os.environ.items() if k.startswith("PIP_") or k.lower().endswith("_proxy")}
    venv = tmp_path / "venv"
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        python = str(venv / "bin" / "python")
        # --no-compile: the one process below compiles what it imports (a few seconds), not
        # every module of torch and its libraries (about 20 s of CPU at install).
        pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-compile", "-q"]
        installed = _run([*pip, "-r", str(model_dir / "requirements.txt")], pip_env, tmp_path, 1500)
        assert installed.returncode == 0, f"pip install -r requirements.txt failed:\n{_tail(installed)}"
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
        log.info("fresh environment: %.2f GB", size / 1e9)

        bare = _run([python, "-c", "import segflow"], env, tmp_path, 60)
        assert bare.returncode != 0 and "No module named 'segflow'" in bare.stderr, bare.stdout + bare.stderr

        (tmp_path / "predict.py").write_text(PREDICT)
        arguments = [str(model_dir), str(tmp_path / "image.npy"), str(tmp_path / "mask.npy")]
        predicted = _run([python, "predict.py", *arguments], env, tmp_path, 600)
        assert predicted.returncode == 0, f"prediction in the fresh environment failed:\n{_tail(predicted)}"
        # segflow came from the model's own code/ folder, nowhere else.
        assert Path(predicted.stdout.split()[-1]).resolve().is_relative_to(model_dir.resolve() / "code")
    finally:
        shutil.rmtree(venv, ignore_errors=True)  # several GB: free them now, not at pytest's cleanup
    mask = np.load(tmp_path / "mask.npy")
    assert mask.shape == (45, 70) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)
