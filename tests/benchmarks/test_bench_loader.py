"""The loader benchmark on a tiny data set: one process and two concurrent rank processes each read every row
exactly once per epoch, TorchRec's reference is timed beside them, and the files it writes hold those records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_loader import main


@pytest.mark.multiproc
def test_one_and_two_ranks_read_every_row_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rows", "30000", "--batch-sizes", "4096", "--workers", "1", "--ranks", "1,2", "--device", "cpu",
                 "--shard-rows", "10000", "--row-group-rows", "2500", "--data-dir", str(tmp_path),
                 "--repeats", "1", "--out", str(tmp_path / "results")]) == 0
    [json_path] = (tmp_path / "results").glob("loader_onehot_snappy_*.json")
    records = json.loads(json_path.read_text())["results"]
    by_ranks = {r["ranks"]: r for r in records if r["loader"].startswith("ours")}
    assert set(by_ranks) == {1, 2}
    for record in by_ranks.values():
        assert record["rows"] == 30000 and record["wall_s"] > 0 and record["rows_per_s"] > 0
        assert record["vs_torchrec"] > 0
    [reference] = [r for r in records if r["loader"].startswith("torchrec")]
    assert reference["rows"] == 30000
    markdown = json_path.with_suffix(".md").read_text()
    assert "2 processes" in markdown and "Goal on the GPU node" in markdown
    checks = {r["checks"] for r in records if r["loader"].startswith("ours") and r["ranks"] == 1}
    assert checks == {"on", "off", ", checks on, first epoch (+ sha256)"}
    assert "Cost of the trust checks" in markdown and "value checks" in markdown and "sha256 of the" in markdown
    assert "rows/s" in capsys.readouterr().out


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--ranks", "0"])
