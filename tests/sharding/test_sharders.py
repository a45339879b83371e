"""CPU-capable sharder, refusal of GPU-only features on CPU, and planning a small model in-process."""

from __future__ import annotations

import pytest
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder

from dlrm_scale.config import ConfigError, load_config
from dlrm_scale.models.dlrm import build_dlrm
from dlrm_scale.sharding.planner import plan_tables, prepare_model
from dlrm_scale.sharding.report import _ranks_text, describe_plan
from dlrm_scale.sharding.sharders import CpuCapableEmbeddingBagCollectionSharder, check_device_support

SMALL = ["data.cardinalities=[40, 30, 50, 20]", "model.embedding_dim=8", "model.bottom_mlp=[16, 8]",
         "model.top_mlp=[16, 1]", "train.batch_size=16"]


def test_sharder_adds_row_wise_types_on_cpu_only() -> None:
    ours, stock = CpuCapableEmbeddingBagCollectionSharder(), EmbeddingBagCollectionSharder()
    assert "row_wise" not in stock.sharding_types("cpu")
    cpu = set(ours.sharding_types("cpu"))
    assert cpu == set(stock.sharding_types("cpu")) | {"row_wise", "table_row_wise"}
    assert ours.sharding_types("cuda") == stock.sharding_types("cuda")
    assert ours.compute_kernels("row_wise", "cpu") == ["fused"]


@pytest.mark.parametrize(("overrides", "key"), [
    (["optimizer.embedding.name=adam"], "optimizer.embedding.name"),
    (["sharding.default_kernel=fused_uvm_caching"], "sharding.default_kernel"),
    (["sharding.tables.C3.compute_kernel=fused_uvm"], "sharding.tables.C3.compute_kernel"),
])
def test_gpu_only_features_are_refused_on_cpu_naming_the_key(overrides: list[str], key: str) -> None:
    cfg = load_config(None, [*SMALL, *overrides])
    with pytest.raises(ConfigError, match=rf"{key} = .* needs a CUDA device"):
        check_device_support(cfg.sharding, cfg.optimizer.embedding.name, "cpu")
    check_device_support(cfg.sharding, cfg.optimizer.embedding.name, "cuda")  # fine on GPUs


def test_planning_for_cpu_refuses_fused_adam() -> None:
    cfg = load_config(None, [*SMALL, "optimizer.embedding.name=adam"])
    model = build_dlrm(cfg.model, cfg.data.cardinalities, device="meta")
    prepare_model(model, cfg)
    with pytest.raises(ConfigError, match="fused adam"):
        plan_tables(model, cfg, world_size=2, compute_device="cpu")


def test_cpu_plan_places_every_table_and_sums_memory_per_rank() -> None:
    cfg = load_config(None, [*SMALL, "sharding.default_type=row_wise", "sharding.tables.C4.sharding_type=table_wise",
                             "optimizer.embedding.name=adagrad"])
    model = build_dlrm(cfg.model, cfg.data.cardinalities, device="meta")
    prepare_model(model, cfg)
    result = plan_tables(model, cfg, world_size=2, compute_device="cpu")
    tables = result.plan.plan["sparse_arch.embedding_bag_collection"]
    assert {name: (t.sharding_type, t.compute_kernel) for name, t in tables.items()} == {
        "t_C1": ("row_wise", "fused"), "t_C2": ("row_wise", "fused"), "t_C3": ("row_wise", "fused"),
        "t_C4": ("table_wise", "fused")}
    estimate = result.estimate
    assert estimate.batch_size_per_rank == 16 and [r.rank for r in estimate.ranks] == [0, 1]
    # adagrad keeps one float per weight: at least 2 x rows x D x 4 bytes per table, all in DDR on CPU
    assert estimate.tables["t_C3"].ddr_bytes >= 2 * 50 * 8 * 4 and estimate.tables["t_C3"].hbm_bytes == 0
    assert sum(r.ddr_bytes for r in estimate.ranks) == sum(t.ddr_bytes for t in estimate.tables.values())
    text = describe_plan(result.plan, estimate)
    assert "t_C3  | row_wise   | fused  | 0-1" in text and "50x8" in text and "rank 0" in text
    assert "rows x dim" not in describe_plan(result.plan)  # without the estimate: placement only


def test_ranks_text_compresses_runs() -> None:
    assert _ranks_text([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert _ranks_text([3]) == "3"
