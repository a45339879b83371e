"""The multi-hot benchmark on a tiny data set: every loader reads every row once, the stages report their disk and
memory, and the files it writes hold those records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_multihot import main


@pytest.mark.multiproc
def test_every_loader_reads_every_row(tmp_path: Path) -> None:
    assert main(["--rows", "6000", "--batch-sizes", "2048", "--compression", "none", "--max-table-rows", "500",
                 "--row-group-rows", "1000", "--data-dir", str(tmp_path), "--out", str(tmp_path / "results")]) == 0
    [json_path] = (tmp_path / "results").glob("multihot_loader_*.json")
    records = json.loads(json_path.read_text())["results"]
    stages = [r for r in records if "stage" in r]
    loaders = {r["loader"]: r for r in records if "loader" in r}
    assert len(stages) == 2 and all(s["disk_mb"] > 0 and s["peak_rss_mb"] > 0 for s in stages)
    assert len(loaders) == 4
    for name, record in loaders.items():
        assert record["rows"] == 6000 and record["rows_per_cpu_s"] > 0, name
    assert "Goal: 1,000,000 multi-hot rows/s per core" in json_path.with_suffix(".md").read_text()
