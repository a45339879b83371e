"""The README's plain-Python serving example, run as written in a fresh ``python -I`` beside the export of a 2-rank
row-wise-sharded run, with ``dlrm_scale`` and ``data_prep`` made unimportable (the package is installed in the
venv, so an isolated interpreter alone would not prove it is unused): its scores of the raw rows equal the trainer's
evaluation of the same rows after prep and the loader (issue 16's acceptance)."""

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


def test_readme_example_scores_raw_rows_as_the_trainer_without_the_package(hash_run, hash_model, tmp_path):
    code = readme_example()
    assert len(code.strip().splitlines()) <= 10
    (tmp_path / "model").symlink_to(hash_model)
    (tmp_path / "raw.tsv").write_text(hash_run.raw[0].read_text())
    script = tmp_path / "example.py"
    guard = "import sys\nsys.modules.update(dlrm_scale=None, data_prep=None)  # importing them now fails\n"
    script.write_text(guard + code + "import numpy\nnumpy.save('probabilities.npy', probabilities.numpy())\n")
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", str(script)], cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.startswith("tensor([")
    expected = 1 / (1 + np.exp(-hash_run.trainer_logits[:1000].astype(np.float64)))
    probabilities = np.load(tmp_path / "probabilities.npy")
    assert probabilities.shape == expected.shape == (700,)
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
