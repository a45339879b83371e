"""The planner's inputs from the config: one TorchRec ``ParameterConstraints`` per table, and table weight dtypes.

``sharding.default_type`` / ``sharding.default_kernel`` constrain every table; ``sharding.tables.<feature>``
overrides one table, named by its feature (``C1``) as in the data, or by its table name (``t_C1``). Pooling
factors come from ``data.multi_hot_sizes`` (the ids per row of each feature; 1 when empty, i.e. one-hot), so the
planner's compute and communication estimates see multi-hot features as the heavier tables they are.

The weight dtype is not a ``ParameterConstraints`` field in TorchRec (1.6 or 1.8): it is the table's
``EmbeddingBagConfig.data_type``, which sets the dtype of the (meta) weight the planner sizes and the
``weights_precision`` fbgemm stores. :func:`apply_weight_dtypes` rebuilds the collection with it.

Example::

    cfg = load_config("mlperf_dcnv2", ["sharding.tables.C21.sharding_type=row_wise"])
    model = build_dlrm(cfg.model, cfg.data.cardinalities)        # EBC on meta
    apply_weight_dtypes(model, cfg.sharding)
    constraints = make_constraints(model, cfg)                   # {"t_C1": ParameterConstraints(...), ...}
    constraints["t_C21"].sharding_types                          # ["row_wise"]
    constraints["t_C21"].pooling_factors                         # [100.0]
"""

from __future__ import annotations

import dataclasses
import typing

from torch import nn
from torchrec.distributed.planner import ParameterConstraints
from torchrec.distributed.types import CacheParams
from torchrec.modules.embedding_configs import DataType, EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from dlrm_scale.config import (
    Config,
    ConfigError,
    ShardingConfig,
    ShardingType,
    TableShardingConfig,
    sparse_feature_names,
)
from dlrm_scale.sharding.fused_optim import embedding_bag_collections
from dlrm_scale.sharding.options import CACHING_KERNEL

WEIGHT_DTYPES = {"fp32": DataType.FP32, "fp16": DataType.FP16}
# every sharding type the config can name except the replicated one
MODEL_PARALLEL_TYPES = [t for t in typing.get_args(ShardingType) if t != "data_parallel"]


def table_configs(model: nn.Module) -> list[EmbeddingBagConfig]:
    """The ``EmbeddingBagConfig`` of every table of every ``EmbeddingBagCollection`` in ``model``."""
    return [table for ebc in embedding_bag_collections(model).values() for table in ebc.embedding_bag_configs()]


def table_overrides(sharding_cfg: ShardingConfig, tables: list[EmbeddingBagConfig]) -> dict[str, TableShardingConfig]:
    """``sharding.tables`` keyed by table name; a key that names no table or feature is a :class:`ConfigError`."""
    by_key: dict[str, str] = {}
    for table in tables:
        by_key[table.name] = table.name
        for feature in table.feature_names:
            by_key[feature] = table.name
    overrides: dict[str, TableShardingConfig] = {}
    for key, override in sharding_cfg.tables.items():
        if key not in by_key:
            known = [f for table in tables for f in table.feature_names]
            raise ConfigError(f"sharding.tables.{key}: no table has feature or name {key!r}; features are "
                              f"{', '.join(known[:5])}{' …' if len(known) > 5 else ''}")
        name = by_key[key]
        if name in overrides:
            raise ConfigError(f"sharding.tables.{key}: table {name} is already configured under another key")
        overrides[name] = override
    return overrides


def _check_type_kernel(key: str, sharding_type: str | None, kernel: str | None) -> None:
    """The ``dense`` kernel is the replicated table of ``data_parallel``, and nothing else is."""
    if sharding_type == "data_parallel" and kernel not in (None, "dense"):
        raise ConfigError(f"{key}: data_parallel tables use the 'dense' kernel, not {kernel!r}")
    if kernel == "dense" and sharding_type not in (None, "data_parallel"):
        raise ConfigError(f"{key}: the 'dense' kernel is only for data_parallel tables, not {sharding_type!r}")


def make_constraints(model: nn.Module, cfg: Config) -> dict[str, ParameterConstraints]:
    """One ``ParameterConstraints`` per table of ``model``, keyed by table name, from ``cfg.sharding`` (type,
    kernel, column-shard width ``min_partition``) and ``cfg.data.multi_hot_sizes``. Unset type/kernel leave the
    planner free to choose (e.g. ``data_parallel`` for tiny tables, ``fused_uvm_caching`` for tables that do not
    fit in HBM). Tables that may be UVM-cached also get ``sharding.cache_load_factor`` and
    ``sharding.prefetch_pipeline`` as TorchRec ``CacheParams``, which the plan carries to fbgemm."""
    tables = table_configs(model)
    overrides = table_overrides(cfg.sharding, tables)
    feature_index = {name: i for i, name in enumerate(sparse_feature_names(len(cfg.data.multi_hot_sizes)))}
    _check_type_kernel("sharding.default_type/default_kernel", cfg.sharding.default_type, cfg.sharding.default_kernel)
    constraints = {}
    for table in tables:
        override = overrides.get(table.name, TableShardingConfig())
        sharding_type = override.sharding_type or cfg.sharding.default_type
        kernel = override.compute_kernel or cfg.sharding.default_kernel
        if override.sharding_type == "data_parallel" and not override.compute_kernel:
            kernel = None  # a table-level data_parallel implies its own kernel over a fused default
        _check_type_kernel(f"sharding.tables.{table.feature_names[0]}", sharding_type, kernel)
        pooling = [float(cfg.data.multi_hot_sizes[feature_index[f]]) if f in feature_index else 1.0
                   for f in table.feature_names]
        min_partition = cfg.sharding.min_partition if override.min_partition is None else override.min_partition
        if min_partition is not None and min_partition <= 0:
            raise ConfigError(f"sharding min_partition must be a positive column count, got {min_partition}")
        sharding_types = [sharding_type] if sharding_type else None
        if sharding_types is None and kernel not in (None, "dense"):
            # a table-batched kernel rules data_parallel out; saying so spares a planner warning per table
            sharding_types = MODEL_PARALLEL_TYPES
        constraints[table.name] = ParameterConstraints(
            sharding_types=sharding_types,
            compute_kernels=[kernel] if kernel else None,
            min_partition=min_partition,
            pooling_factors=pooling,
            cache_params=_cache_params(cfg.sharding) if kernel in (None, CACHING_KERNEL) else None,
        )
    return constraints


def _cache_params(sharding_cfg: ShardingConfig) -> CacheParams | None:
    if sharding_cfg.cache_load_factor is None and not sharding_cfg.prefetch_pipeline:
        return None
    return CacheParams(load_factor=sharding_cfg.cache_load_factor,
                       prefetch_pipeline=True if sharding_cfg.prefetch_pipeline else None)


def table_weight_dtypes(sharding_cfg: ShardingConfig, tables: list[EmbeddingBagConfig]) -> dict[str, DataType]:
    """Table name -> ``DataType`` from ``sharding.weight_dtype`` and the per-table ``weight_dtype`` overrides."""
    overrides = table_overrides(sharding_cfg, tables)
    return {table.name: WEIGHT_DTYPES[getattr(overrides.get(table.name), "weight_dtype", None)
                                      or sharding_cfg.weight_dtype]
            for table in tables}


def apply_weight_dtypes(model: nn.Module, sharding_cfg: ShardingConfig) -> None:
    """Rebuilds, in place, every ``EmbeddingBagCollection`` of ``model`` whose tables' ``data_type`` differs from
    the config's, before any optimizer is attached or any sharding. A real (non-meta) collection keeps its
    weights, cast to the new dtype; a meta one stays unallocated for ``DistributedModelParallel`` to materialise.
    """
    for path, ebc in embedding_bag_collections(model).items():
        tables = ebc.embedding_bag_configs()
        dtypes = table_weight_dtypes(sharding_cfg, tables)
        if all(table.data_type == dtypes[table.name] for table in tables):
            continue
        if any(hasattr(p, "_optimizer_classes") for p in ebc.parameters()):
            raise ValueError(f"{path}: set table weight dtypes before attaching the embedding optimizer")
        device = next(ebc.parameters()).device
        rebuilt = EmbeddingBagCollection(
            tables=[dataclasses.replace(table, data_type=dtypes[table.name]) for table in tables],
            is_weighted=ebc.is_weighted(), device=device,
        )
        if device.type != "meta":
            rebuilt.load_state_dict(ebc.state_dict())
        if not path:
            raise ValueError("apply_weight_dtypes rebuilds a collection inside its parent; pass the model holding it")
        parent_path, _, attr = path.rpartition(".")
        setattr(model.get_submodule(parent_path) if parent_path else model, attr, rebuilt)
