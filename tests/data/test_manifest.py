"""The manifest round-trips, rejects malformed files, and training refuses data prepared differently."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dlrm_scale.config import load_config
from dlrm_scale.data.manifest import Manifest, ManifestError, Shard, Split, check_compatible


def _manifest(**overrides) -> Manifest:
    values = dict(
        dataset="terabyte", encoding="hash", max_ind_range=20000, min_frequency=1, dense_transform="log1p",
        dense_columns=[f"I{i}" for i in range(1, 14)], sparse_columns=[f"C{i}" for i in range(1, 27)],
        cardinalities=[20000] * 26,
        splits={"train": Split(rows=10, shards=[Shard(path="train/part-00000.parquet", rows=10, row_groups=1,
                                                      sha256="0" * 64)]),
                "val": Split(rows=0, shards=[])},
    )
    values.update(overrides)
    return Manifest(**values)


def test_round_trip(tmp_path: Path) -> None:
    manifest = _manifest()
    manifest.save(tmp_path)
    assert Manifest.load(tmp_path) == manifest
    assert not list(tmp_path.glob(".manifest.*"))  # no temp file left behind


def test_malformed_manifests(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no manifest; run `dlrm-scale prep`"):
        Manifest.load(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        Manifest.load(tmp_path)
    data = _manifest().to_dict()
    data["splits"]["train"]["rows"] = 11
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="says 11 rows but its shards hold 10"):
        Manifest.load(tmp_path)
    data = _manifest().to_dict() | {"schema_version": 99}
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="schema_version 99"):
        Manifest.load(tmp_path)


def test_compatible_returns_table_sizes() -> None:
    cfg = load_config("tiny_cpu")
    assert check_compatible(_manifest(), cfg.data) == [20000] * 26
    bigger = load_config("tiny_cpu", ["data.cardinalities=" + str([30000] * 26)])
    assert check_compatible(_manifest(), bigger.data) == [30000] * 26


def test_mismatch_says_what_differs() -> None:
    cfg = load_config("tiny_cpu", ["data.dense_transform=log3", "data.max_ind_range=10",
                                   "data.cardinalities=" + str([100] * 26), "data.eval_split=test"])
    with pytest.raises(ManifestError) as err:
        check_compatible(_manifest(), cfg.data)
    text = str(err.value)
    assert "dense_transform: data has 'log1p', config has 'log3'" in text
    assert "max_ind_range: data has 20000, config has 10" in text
    assert "C1 (100 < 20000)" in text
    assert "split 'test': not in data" in text
