"""``dlrm-scale train`` / ``eval`` around the run folder: a new folder per run, nothing repeated for eval, a
refused resume that leaves the folder as it was, and ``--dry-run`` against data prepared for a preset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dlrm_scale.cli import main
from tests.dist_utils import REPO

TINY = ["--config", "tiny_cpu", "--set", "data.source=synthetic", "--set", "data.cardinalities=[50,70,30]",
        "--set", "data.synthetic_rows=256", "--set", "train.batch_size=32", "--set", "train.max_steps=2",
        "--set", "train.progress=false", "--set", "sharding.default_type=table_wise"]


def dlrm_scale(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``dlrm-scale ARGS`` as a plain process (a world of one) in ``cwd``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_MAX_RESTARTS"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "dlrm_scale.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=240)


@pytest.mark.multiproc
def test_a_run_is_one_folder(tmp_path: Path) -> None:
    trained = dlrm_scale("train", *TINY, cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "synthetic batches" in trained.stdout and "UserWarning" not in trained.stderr
    run = (tmp_path / "runs" / "latest").resolve()
    assert run.parent == tmp_path / "runs" and run.name.startswith("tiny_cpu-")
    assert f"run folder: runs/{run.name}" in trained.stdout
    config = (run / "config.toml").read_bytes()
    checkpoint = run / "checkpoints" / "ckpt-00000002"
    assert b'name = "dot"' in (checkpoint / "config.toml").read_bytes()

    refused = dlrm_scale("train", "--run-dir", str(run), "--set", "model.interaction.name=cat", cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "model.interaction.name 'dot' -> 'cat'" in refused.stderr
    assert (run / "config.toml").read_bytes() == config
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["ckpt-00000002", "latest"]

    result = tmp_path / "eval.json"
    evaluated = dlrm_scale("eval", "--run-dir", "runs/latest", "--json", str(result), cwd=tmp_path)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    metrics = json.loads(result.read_text())
    assert metrics["rows"] == 256 and metrics["checkpoint"].endswith("ckpt-00000002") and 0 <= metrics["auc"] <= 1
    mismatch = dlrm_scale("eval", "--run-dir", "runs/latest", "--set", "model.top_mlp=[8, 1]", cwd=tmp_path)
    assert mismatch.returncode == 2 and mismatch.stderr.count("\n") == 1
    assert "model.top_mlp [64, 32, 1] -> [8, 1]" in mismatch.stderr
    unlabeled = dlrm_scale("eval", "--run-dir", "runs/latest", "--split", "unlabeled", cwd=tmp_path)
    assert unlabeled.returncode == 2 and unlabeled.stderr.count("\n") == 1
    assert "'unlabeled' has no labels" in unlabeled.stderr and "dlrm-scale predict" in unlabeled.stderr


def test_dry_run_checks_data_prepared_for_the_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """prep --preset makes what the preset expects; a flag that overrides it is recorded, and training against
    the preset then names both values and the exact fix; --dry-run plans without building tables."""
    monkeypatch.chdir(tmp_path)
    raw, data = tmp_path / "raw", tmp_path / "data"
    assert main(["synth", "criteo", "--rows", "3000", "--days", "3", "--out", str(raw)]) == 0
    days = [str(raw / f"day_{d}") for d in range(3)]
    assert main(["prep", "criteo", "--input", *days, "--out", str(data), "--dataset", "terabyte", "--preset",
                 "tiny_cpu", "--dense-transform", "log3", "--workers", "1", "--no-progress"]) == 0
    assert "train with --set data.dense_transform=log3" in capsys.readouterr().err
    manifest = json.loads((data / "manifest.json").read_text())
    assert (manifest["encoding"], manifest["max_ind_range"]) == ("hash", 20000)  # tiny_cpu's [data]
    assert manifest["extra"]["preset"] == "tiny_cpu"
    assert manifest["extra"]["preset_overrides"] == {"dense_transform": "log3"}

    assert main(["train", "--dry-run", "--config", "tiny_cpu", "--set", f"data.path={data}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dense_transform: data has 'log3', config has 'log1p'" in err
    assert "train with --set data.dense_transform=log3, or prepare again with --dense-transform log1p" in err

    assert main(["train", "--dry-run", "--config", "tiny_cpu", "--set", f"data.path={data}", "--set",
                 "data.dense_transform=log3", "--world-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "dry run OK" in out and "26 tables (520,000 rows)" in out and "2 x cpu" in out
    assert not (tmp_path / "runs").exists(), "a dry run writes nothing"


def test_empty_split_and_bad_interaction_params_are_one_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--dry-run", *TINY, "--set", "data.synthetic_rows=0"]) == 2
    assert "split 'train' of synthetic data has no rows" in capsys.readouterr().err
    assert main(["train", "--dry-run", *TINY, "--set", "model.interaction.params={scal = 1}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "accepted: self_interaction=False" in err
