"""The end-to-end training benchmark runs under torchrun on the CPU (2 gloo ranks) at a tiny table scale for both
implementations and writes one record per measurement with the ratio to TorchRec's example path; its config
scaling floors every cardinality at 1 and unknown implementations are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.bench_train import bench_config, parse_args
from dlrm_scale.config import load_config
from tests.dist_utils import REPO, run_torchrun


@pytest.mark.multiproc
def test_two_rank_cpu_run_measures_both_implementations(tmp_path: Path) -> None:
    run_torchrun([str(REPO / "benchmarks" / "bench_train.py"), "--presets", "criteo_kaggle", "--scale-tables",
                  "1e-4", "--batch-size", "64", "--steps", "3", "--warmup", "1", "--out", str(tmp_path)],
                 nproc=2, timeout=120)
    [json_path] = tmp_path.glob("train_*.json")
    result = json.loads(json_path.read_text())
    records = {r["implementation"]: r for r in result["records"]}
    assert set(records) == {"ours", "torchrec"} and len(result["records"]) == 2
    expected_sum = sum(max(1, int(c * 1e-4)) for c in load_config("criteo_kaggle").data.cardinalities)
    for r in records.values():
        assert r["benchmark"] == "train" and r["preset"] == "criteo_kaggle"
        assert r["world_size"] == 2 and r["batch_size"] == 64 and r["scale_tables"] == 1e-4
        assert r["cardinalities_sum"] == expected_sum and r["dtype"] == "fp32"
        assert 0 < r["min_ms"] <= r["median_ms"] <= r["max_ms"]
        assert r["samples_per_s_per_rank"] == pytest.approx(64 / (r["median_ms"] * 1e-3))
    assert records["torchrec"]["ratio_to_reference"] == 1.0
    ours, ref = records["ours"], records["torchrec"]
    assert ours["ratio_to_reference"] == pytest.approx(ours["samples_per_s_per_rank"] / ref["samples_per_s_per_rank"])
    markdown = json_path.with_suffix(".md").read_text()
    assert "| criteo_kaggle | ours |" in markdown and "| criteo_kaggle | torchrec |" in markdown


def test_scaled_config_floors_cardinalities_and_applies_overrides() -> None:
    args = parse_args(["--presets", "mlperf_dcnv2", "--scale-tables", "1e-6", "--batch-size", "32",
                       "--set", "sharding.weight_dtype=fp16"])
    cfg = bench_config("mlperf_dcnv2", args, world_size=4)
    original = load_config("mlperf_dcnv2").data.cardinalities
    assert cfg.data.cardinalities == [max(1, int(c * 1e-6)) for c in original]
    assert min(cfg.data.cardinalities) == 1 and max(cfg.data.cardinalities) == 40
    assert cfg.train.batch_size == 32 and cfg.sharding.weight_dtype == "fp16" and cfg.data.path == ""
    assert cfg.data.synthetic_rows >= args.distinct_batches * 32 * 4


def test_unknown_implementation_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--implementations", "ours,torchrex"])
    assert "torchrex" in capsys.readouterr().err
