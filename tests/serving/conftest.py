"""Runs to export, made once per session: prepared data, a tiny trained run folder, and its fp32 export.

- ``hash_run``: synthetic raw lines (``tests/data_prep/raw.random_lines``: missing fields, negative I2, short and
  upper-case hex) prepared with ``--encoding hash --max-ind-range 300`` and trained for a few steps on 2 ranks
  (torchrun, gloo) with every table row-wise sharded: the acceptance setting of issue 16.
- ``criteo_vocab_run``: the real Criteo samples (TSV and a CSV that prints integers as ``260.0``) prepared with
  ``--encoding vocab --min-frequency 2 --max-ind-range 100000`` and trained for a few steps on 1 rank.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import CRITEO_SAMPLES
from tests.data_prep.raw import prep, random_lines, write_lines
from tests.dist_utils import REPO, run_torchrun

CRITEO_INPUTS = ("DERIVED_kaggle-2014-criteo__train.tiny.raw.tsv", "DeepCTR__criteo_sample.txt", "PaddleRec__part-0",
                 "DERIVED_glc_pagerank_benchmark__criteo_terabyte_first5rows.tsv")


@dataclass(kw_only=True)
class Run:
    raw: list[Path]  # the raw inputs, in the order prep read them
    data: Path  # prep's output
    run_dir: Path
    trainer_logits: np.ndarray  # (N,) the trainer's eval forward over split "train", file order


def train_args(data: Path, out_dir: Path, *extra: str) -> list[str]:
    settings = [f"data.path={data}", "data.eval_split=", "train.batch_size=64", "train.max_steps=5",
                "train.progress=false", "train.log_every_steps=5", f"train.out_dir={out_dir}", *extra]
    return ["--config", "tiny_cpu", *[arg for s in settings for arg in ("--set", s)]]


def single_process_env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def run_python(*args: str | Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=single_process_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args} failed\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def trainer_logits(run_dir: Path, tmp: Path) -> np.ndarray:
    out = tmp / "trainer_logits.npy"
    run_python(Path(__file__).parent / "trainer_scores.py", run_dir, "train", out)
    return np.load(out)


@pytest.fixture(scope="session")
def hash_run(tmp_path_factory) -> Run:
    root = tmp_path_factory.mktemp("hash_run")
    raw = write_lines(root / "raw" / "day_0", random_lines(700, seed=16))
    assert prep("--input", raw, "--out", root / "data", "--encoding", "hash", "--max-ind-range", "300",
                "--workers", "1") == 0
    run_torchrun(["-m", "dlrm_scale.cli", "train", *train_args(
        root / "data", root / "run", "data.max_ind_range=300", "sharding.default_type=row_wise")])
    return Run(raw=[raw], data=root / "data", run_dir=root / "run", trainer_logits=trainer_logits(root / "run", root))


@pytest.fixture(scope="session")
def hash_model(hash_run: Run, tmp_path_factory) -> Path:
    from dlrm_scale.cli import main

    out = tmp_path_factory.mktemp("hash_model") / "model"
    assert main(["export", "--run-dir", str(hash_run.run_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def criteo_vocab_run(tmp_path_factory) -> Run:
    if not CRITEO_SAMPLES.is_dir():
        pytest.skip(f"real Criteo samples not found at {CRITEO_SAMPLES}")
    root = tmp_path_factory.mktemp("criteo_vocab_run")
    raw = [CRITEO_SAMPLES / name for name in CRITEO_INPUTS]
    assert prep("--input", *raw, "--out", root / "data", "--encoding", "vocab", "--min-frequency", "2",
                "--max-ind-range", "100000", "--workers", "1") == 0
    run_python("-m", "dlrm_scale.cli", "train", *train_args(
        root / "data", root / "run", "data.encoding=vocab", "data.min_frequency=2", "data.max_ind_range=100000"))
    return Run(raw=raw, data=root / "data", run_dir=root / "run", trainer_logits=trainer_logits(root / "run", root))
