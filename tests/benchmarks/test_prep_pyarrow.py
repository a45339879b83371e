"""The pyarrow prep baseline does the same work as ``dlrm-scale prep criteo --encoding hash``: on one small raw
file both write the same rows (label, log1p dense, hashed ids), compared as sorted tables."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.prep_pyarrow import SCHEMA
from benchmarks.prep_pyarrow import main as baseline
from data_prep import synth
from tests.dist_utils import REPO


def sorted_rows(table: pa.Table) -> np.ndarray:
    """The rows as a float64 matrix in a canonical order (columns in SCHEMA's order)."""
    matrix = np.stack([table[name].to_numpy().astype(np.float64) for name in SCHEMA.names], axis=1)
    return matrix[np.lexsort(matrix.T[::-1])]


def test_baseline_writes_what_our_prep_writes(tmp_path: Path) -> None:
    raw = tmp_path / "day_0"
    synth.write_day(raw, synth.build_hidden_model(1, 500), 600, 1, 0, False)
    assert baseline(["--input", str(raw), "--out", str(tmp_path / "baseline.parquet"), "--max-ind-range", "997"]) == 0
    subprocess.run([sys.executable, "-m", "dlrm_scale.cli", "prep", "criteo", "--input", str(raw), "--out",
                    str(tmp_path / "ours"), "--encoding", "hash", "--max-ind-range", "997", "--no-progress"],
                   cwd=REPO, check=True, capture_output=True)
    ours = pa.concat_tables([pq.read_table(path).select(SCHEMA.names)
                             for path in sorted((tmp_path / "ours").rglob("*.parquet"))])
    theirs = pq.read_table(tmp_path / "baseline.parquet")
    assert theirs.schema.equals(SCHEMA) and theirs.num_rows == ours.num_rows == 600
    np.testing.assert_array_equal(sorted_rows(theirs), sorted_rows(ours))
