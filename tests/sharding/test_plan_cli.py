"""``dlrm-scale plan`` on the MLPerf DCNv2 preset (26 tables, 40M-row cap, D=128, multi-hot) for 1, 8 and 64
GPUs of 80 GiB, without any GPU: every table placed, per-rank memory within the device limits, JSON fields."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dlrm_scale.config import load_config
from dlrm_scale.sharding import cli

GIB = 1024**3
PRESET = load_config("mlperf_dcnv2")
# One GPU holds the MLPerf tables only with row-wise Adagrad's state (one value per row): the preset's full Adagrad
# (the reference's, as much state as weights: ~195 GB) needs the 8 GPUs it was written for.
ROWWISE_STATE = ("--set", "optimizer.embedding.name=rowwise_adagrad")


def plan(tmp_path: Path, *argv: str) -> tuple[dict, str]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "plan.json"
    args = parser.parse_args(["--config", "mlperf_dcnv2", "--device", "cuda", "--hbm-gb", "80", "--json", str(out),
                              *argv])
    assert cli.run(args) == 0
    return json.loads(out.read_text()), str(out)


def check_valid(result: dict, world_size: int) -> None:
    assert result["world_size"] == world_size and result["compute_device"] == "cuda"
    assert result["batch_size_per_rank"] == PRESET.train.batch_size
    assert result["local_world_size"] == min(8, world_size)
    tables = {t["table"]: t for t in result["tables"]}
    assert sorted(tables) == sorted(f"t_C{i}" for i in range(1, 27))
    for i, rows in enumerate(PRESET.data.cardinalities):
        table = tables[f"t_C{i + 1}"]
        assert set(table) >= {"table", "features", "rows", "dim", "weight_dtype", "sharding_type", "compute_kernel",
                              "ranks", "hbm_bytes", "ddr_bytes", "shards"}
        assert (table["rows"], table["dim"], table["features"]) == (rows, 128, [f"C{i + 1}"])
        assert table["ranks"] and all(0 <= r < world_size for r in table["ranks"])
        if table["sharding_type"] == "data_parallel":
            assert table["ranks"] == list(range(world_size)) and table["compute_kernel"] == "dense"
        else:
            # the shards tile the whole table
            assert sum(s["sizes"][0] * s["sizes"][1] for s in table["shards"]) == rows * 128
            assert {s["rank"] for s in table["shards"]} == set(table["ranks"])
    assert [r["rank"] for r in result["ranks"]] == list(range(world_size))
    for rank in result["ranks"]:
        assert rank["hbm_cap_bytes"] == 80 * GIB
        assert 0 < rank["hbm_bytes"] <= rank["hbm_cap_bytes"] and rank["ddr_bytes"] <= rank["ddr_cap_bytes"]
    assert sum(r["hbm_bytes"] for r in result["ranks"]) == sum(t["hbm_bytes"] for t in result["tables"])


@pytest.mark.parametrize("world_size", [8, 64])
def test_mlperf_plan_on_many_gpus_fits_in_hbm(tmp_path: Path, world_size: int, capsys) -> None:
    result, _ = plan(tmp_path, "--world-size", str(world_size))
    check_valid(result, world_size)
    assert all(t["compute_kernel"] in ("fused", "dense") for t in result["tables"])  # no need for host memory
    printed = capsys.readouterr().out
    assert all(f"t_C{i} " in printed for i in range(1, 27)) and "per-rank memory estimate" in printed


def test_mlperf_plan_on_one_gpu_caches_tables_in_hbm(tmp_path: Path) -> None:
    """204M x 128 fp32 rows (~98 GiB) exceed 80 GiB: the planner keeps some 40M-row tables in host memory with an
    HBM cache (fused_uvm_caching), and the rank's HBM estimate stays within its capacity."""
    result, _ = plan(tmp_path, "--world-size", "1", *ROWWISE_STATE)
    check_valid(result, 1)
    cached = [t for t in result["tables"] if t["compute_kernel"] == "fused_uvm_caching"]
    assert cached and all(t["rows"] == 40_000_000 and t["ddr_bytes"] > 0 for t in cached)
    assert result["ranks"][0]["ddr_bytes"] > 0


def test_mlperf_plan_on_one_gpu_fits_in_fp16(tmp_path: Path) -> None:
    result, _ = plan(tmp_path, "--world-size", "1", "--set", "sharding.weight_dtype=fp16", *ROWWISE_STATE)
    check_valid(result, 1)
    assert {t["weight_dtype"] for t in result["tables"]} == {"fp16"}
    assert {t["compute_kernel"] for t in result["tables"]} <= {"fused", "dense"}  # all in HBM


def test_mlperf_on_one_gpu_without_uvm_says_what_to_change(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        plan(tmp_path, "--world-size", "1", "--set", "sharding.default_kernel=fused")
    message = str(info.value)
    assert "no placement of the embedding tables on 1 x cuda (80 GiB HBM" in message
    for remedy in ("more ranks", "sharding.weight_dtype", "fused_uvm_caching", "train.batch_size"):
        assert remedy in message
