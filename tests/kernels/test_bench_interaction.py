"""The interaction benchmark runs end to end on the CPU at a tiny size and writes one JSON record per
measurement (ratios against the bmm reference of the same run, minimum bytes, errors) plus a Markdown table and,
with matplotlib installed (the `bench` extra, which scripts/install.sh installs), a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_interaction import main


def test_cpu_run_writes_records(tmp_path: Path) -> None:
    code = main(["--device", "cpu", "--batch-sizes", "3,5", "--features", "2", "--dims", "8", "--implementations",
                 "dot,cat", "--target-ms", "1", "--warmup", "0", "--out", str(tmp_path), "--tag", "t"])
    assert code == 0
    result = json.loads((tmp_path / "interaction_t.json").read_text())
    records = result["records"]
    names = {r["implementation"] for r in records}
    assert names == {"bmm_reference", "dot", "cat"}
    assert len(records) == 3 * 2 * 2  # implementations x batches x passes
    for r in records:
        assert r["status"] == "ok" and r["median_ms"] > 0 and r["ratio_to_reference"] > 0
        width = 8 + 3 * 2 // 2 if r["implementation"] != "cat" else 3 * 8
        forward = r["batch"] * (3 * 8 + width) * 4  # fp32: inputs read, output written
        backward = r["batch"] * (width + 2 * 3 * 8) * 4  # output gradient read, inputs read, their gradients written
        assert r["bytes"] == (forward if r["benchmark"] == "interaction_fwd" else forward + backward)
    assert all(r["relative_error"] < 1e-6 for r in records if r["implementation"] != "cat")
    assert [r["ratio_to_reference"] for r in records if r["implementation"] == "bmm_reference"] == [1.0] * 4
    assert "| dot |" in (tmp_path / "interaction_t.md").read_text()
    pytest.importorskip("matplotlib")
    png = (tmp_path / "interaction_t.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000  # a real figure, not an empty canvas
