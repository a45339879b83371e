"""``benchmarks/gpu_check.sh --dry-run`` checks every stage's command line and imports on the CPU (so a typo cannot
first show up on the GPU machine), catches a bad one, and the summary table reads what the stages wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from benchmarks import dry_run, gpu_summary
from tests.dist_utils import REPO

STAGES = ["env", "tests:gpu", "tests:kernels", "interaction:sweep", "interaction:grid", "train", "loader", "summary"]


def test_dry_run_passes_for_every_stage() -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    env.pop("OUT", None)
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert [line.removeprefix("ok ") for line in result.stdout.splitlines() if line.startswith("ok ")] == STAGES
    assert "dry run: every stage would start" in result.stdout


def test_a_typo_in_a_stage_fails_the_dry_run(tmp_path: Path, capsys) -> None:
    commands = tmp_path / "commands.tsv"
    commands.write_text(f"grid\t{sys.executable} benchmarks/bench_interaction.py --batch-sizes 8 --no-such-flag\n"
                        f"tests\t{sys.executable} -m pytest -m no_such_marker tests/benchmarks/test_gpu_check.py\n"
                        "tool\tno-such-program --flag\n"
                        f"ok\t{sys.executable} benchmarks/gpu_summary.py {tmp_path}\n")
    cwd = Path.cwd()
    os.chdir(REPO)
    try:
        assert dry_run.main([str(commands)]) == 1
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert "dry run: would fail: grid, tests, tool" in out and "ok ok" in out


def test_summary_reads_the_stage_results(tmp_path: Path, capsys) -> None:
    (tmp_path / "stages.tsv").write_text("train\t0\t95\t150\nloader\t124\t45\t45\n")
    records = [{"preset": "criteo_kaggle", "implementation": impl, "samples_per_s_per_rank": rate,
                "ratio_to_reference": ratio} for impl, rate, ratio in (("ours", 2e6, 1.5), ("torchrec", 1e6, 1.0))]
    (tmp_path / "train_x.json").write_text(json.dumps({"meta": {}, "records": records}))
    assert gpu_summary.main([str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "| train | ok | 95 / 150 s | criteo_kaggle ours: 2,000,000 samples/s per rank (1.50x TorchRec)" in table
    assert "| loader | TIMED OUT | 45 / 45 s | - |" in table
    assert (tmp_path / "summary.md").read_text().endswith(table)
