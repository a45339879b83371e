"""The README's plain-Python serving example, run as written in a fresh ``python -I`` beside a model directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests.dist_utils import REPO

pytestmark = pytest.mark.multiproc


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- serving-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "README: no serving example"
    return match.group(1)


def test_readme_serving_example_runs_without_the_package(hash_run, hash_model, tmp_path):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 10
    (tmp_path / "model").symlink_to(hash_model)
    (tmp_path / "raw.tsv").write_text(hash_run.raw[0].read_text())
    script = tmp_path / "example.py"
    script.write_text(code + "import numpy\nnumpy.save('probabilities.npy', probabilities.numpy())\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith("tensor([")
    expected = 1 / (1 + np.exp(-hash_run.trainer_logits[:1000].astype(np.float64)))
    np.testing.assert_allclose(np.load(tmp_path / "probabilities.npy"), expected, rtol=0, atol=1e-5)
