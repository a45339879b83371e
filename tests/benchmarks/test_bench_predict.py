"""The predict benchmark end to end on a tiny setup: every variant is exported, scored and timed, and the files it
writes hold those records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_predict import main


@pytest.mark.slow
@pytest.mark.multiproc
def test_every_variant_is_measured_against_fp32_and_the_eager_forward(tmp_path: Path) -> None:
    assert main(["--rows", "3000", "--max-ind-range", "300", "--quantize", "none,int8", "--batch-rows", "128",
                 "--repeats", "1", "--work-dir", str(tmp_path / "work"), "--out", str(tmp_path / "results")]) == 0
    [json_path] = (tmp_path / "results").glob("predict_*.json")
    records = {r["quantize"]: r for r in json.loads(json_path.read_text())["results"]}
    assert set(records) == {"none", "int8"}
    assert records["none"]["auc_change"] == 0 and records["none"]["max_probability_change"] == 0
    assert 0 < records["int8"]["max_probability_change"] < 1e-2
    assert records["int8"]["size_mib"] < records["none"]["size_mib"]
    for record in records.values():
        assert record["rows"] == 750 and record["prepared_rows_per_s"] > 0 and record["eager_rows_per_s"] > 0
    assert "| int8 |" in json_path.with_suffix(".md").read_text()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--run-dir", "somewhere"])
