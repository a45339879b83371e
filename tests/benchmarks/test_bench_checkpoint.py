"""The checkpoint-verification benchmark on a few MB: it hashes, verifies and records GB/s per case."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.bench_checkpoint import main


def test_times_manifest_and_verification(tmp_path: Path) -> None:
    assert main(["--gb", "0.004", "--ranks", "2", "--repeats", "2", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "results")]) == 0
    [json_path] = (tmp_path / "results").glob("checkpoint_verify_*.json")
    records = json.loads(json_path.read_text())["results"]
    assert [r["case"] for r in records] == ["save: write manifest (hash all files)",
                                           *["load: verify, warm page cache"] * 2]
    assert all(r["seconds"] > 0 and r["gb_per_s"] > 0 for r in records)
