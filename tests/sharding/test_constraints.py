"""Planner inputs from the config: ParameterConstraints per table, weight dtypes, the fused embedding optimizer."""

from __future__ import annotations

import pytest
import torch
from torchrec.modules.embedding_configs import DataType
from torchrec.optim import RowWiseAdagrad

from dlrm_scale.config import ConfigError, load_config
from dlrm_scale.models.dlrm import build_dlrm
from dlrm_scale.sharding.constraints import apply_weight_dtypes, make_constraints, table_configs
from dlrm_scale.sharding.fused_optim import apply_embedding_optimizer

SMALL = ["data.cardinalities=[40, 30, 50, 20]", "model.embedding_dim=8", "model.bottom_mlp=[16, 8]",
         "model.top_mlp=[16, 1]"]


def small(*overrides: str):
    cfg = load_config(None, [*SMALL, *overrides])
    return cfg, build_dlrm(cfg.model, cfg.data.cardinalities, device="meta")


def test_defaults_leave_the_planner_free_and_pooling_is_one_hot() -> None:
    cfg, model = small()
    constraints = make_constraints(model, cfg)
    assert sorted(constraints) == ["t_C1", "t_C2", "t_C3", "t_C4"]
    for constraint in constraints.values():
        assert constraint.sharding_types is None and constraint.compute_kernels is None
        assert constraint.pooling_factors == [1.0]


def test_defaults_and_per_table_overrides_by_feature_or_table_name() -> None:
    cfg, model = small("sharding.default_type=row_wise", "sharding.default_kernel=fused", "sharding.min_partition=4",
                       "sharding.tables.C2.sharding_type=table_wise",
                       "sharding.tables.t_C3.sharding_type=data_parallel",
                       "sharding.tables.C4.min_partition=8", "data.multi_hot_sizes=[3, 1, 100, 2]")
    constraints = make_constraints(model, cfg)
    assert constraints["t_C1"].sharding_types == ["row_wise"] and constraints["t_C1"].compute_kernels == ["fused"]
    assert constraints["t_C2"].sharding_types == ["table_wise"] and constraints["t_C2"].compute_kernels == ["fused"]
    # a table made data_parallel does not inherit the fused default kernel: the planner picks its dense kernel
    assert constraints["t_C3"].sharding_types == ["data_parallel"] and constraints["t_C3"].compute_kernels is None
    assert [constraints[t].min_partition for t in ("t_C1", "t_C4")] == [4, 8]
    assert [constraints[t].pooling_factors for t in ("t_C1", "t_C2", "t_C3", "t_C4")] == [[3.0], [1.0], [100.0], [2.0]]


@pytest.mark.parametrize(("overrides", "message"), [
    (["sharding.tables.C9.sharding_type=row_wise"], "sharding.tables.C9"),
    (["sharding.tables.C1.sharding_type=row_wise", "sharding.tables.t_C1.compute_kernel=fused"], "already configured"),
    (["sharding.default_type=data_parallel", "sharding.default_kernel=fused"], "data_parallel tables use the 'dense'"),
    (["sharding.tables.C1.compute_kernel=dense", "sharding.default_type=row_wise"], "only for data_parallel"),
    (["sharding.min_partition=0"], "min_partition"),
])
def test_bad_sharding_config_is_a_clear_error(overrides: list[str], message: str) -> None:
    cfg, model = small(*overrides)
    with pytest.raises(ConfigError, match=message):
        make_constraints(model, cfg)


def test_a_fused_kernel_alone_excludes_data_parallel() -> None:
    cfg, model = small("sharding.default_kernel=fused")
    types = make_constraints(model, cfg)["t_C1"].sharding_types
    assert "data_parallel" not in types and {"table_wise", "row_wise", "column_wise"} <= set(types)


def test_weight_dtype_rebuilds_meta_tables_with_per_table_override() -> None:
    cfg, model = small("sharding.weight_dtype=fp16", "sharding.tables.C2.weight_dtype=fp32")
    apply_weight_dtypes(model, cfg.sharding)
    ebc = model.sparse_arch.embedding_bag_collection
    dtypes = {name: bag.weight.dtype for name, bag in ebc.embedding_bags.items()}
    assert dtypes == {"t_C1": torch.float16, "t_C2": torch.float32, "t_C3": torch.float16, "t_C4": torch.float16}
    assert [t.data_type for t in table_configs(model)] == [DataType.FP16, DataType.FP32, DataType.FP16, DataType.FP16]
    assert all(p.is_meta for p in ebc.parameters())


def test_weight_dtype_keeps_the_values_of_real_tables() -> None:
    cfg = load_config(None, [*SMALL, "sharding.weight_dtype=fp16"])
    model = build_dlrm(cfg.model, cfg.data.cardinalities, device="cpu")
    before = model.sparse_arch.embedding_bag_collection.embedding_bags["t_C3"].weight.detach().clone()
    apply_weight_dtypes(model, cfg.sharding)
    after = model.sparse_arch.embedding_bag_collection.embedding_bags["t_C3"].weight
    assert after.dtype == torch.float16
    torch.testing.assert_close(after.float(), before, atol=1e-3, rtol=1e-3)


def test_embedding_optimizer_is_attached_to_every_table_with_its_own_kwargs() -> None:
    cfg, model = small("optimizer.embedding.name=rowwise_adagrad", "optimizer.embedding.lr=0.02")
    apply_embedding_optimizer(model, cfg.optimizer.embedding)
    params = list(model.sparse_arch.embedding_bag_collection.parameters())
    assert all(p._optimizer_classes == [RowWiseAdagrad] for p in params)
    assert all(p._optimizer_kwargs == [{"lr": 0.02, "weight_decay": 0.0, "eps": 1e-8}] for p in params)
    # TorchRec writes into these dicts while sharding: they must not be shared between tables
    assert len({id(p._optimizer_kwargs[0]) for p in params}) == len(params)
    assert not any(hasattr(p, "_optimizer_classes") for p in model.top_mlp.parameters())
    with pytest.raises(ValueError, match="already has an in-backward optimizer"):
        apply_embedding_optimizer(model, cfg.optimizer.embedding)


def test_sgd_embedding_optimizer_takes_no_eps() -> None:
    cfg, model = small("optimizer.embedding.name=sgd")
    apply_embedding_optimizer(model, cfg.optimizer.embedding)
    param = next(model.sparse_arch.embedding_bag_collection.parameters())
    assert param._optimizer_classes == [torch.optim.SGD] and "eps" not in param._optimizer_kwargs[0]
