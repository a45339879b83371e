"""Plan and shard: TorchRec's ``EmbeddingShardingPlanner`` from the config, then ``DistributedModelParallel``.

The planner sees a ``Topology`` (world size, device type, HBM/DDR per rank, ranks per host), the per-rank batch
size and one ``ParameterConstraints`` per table (``dlrm_scale.sharding.constraints``), and places every table:
sharding type, compute kernel, ranks. With no constraints it chooses for itself, e.g. ``fused_uvm_caching`` for
tables that do not fit in HBM. Planning needs no device: the model is built on ``meta``.

Typical use under torchrun (every rank; the plan is computed on rank 0 and broadcast)::

    model = build_dlrm(cfg.model, table_sizes(cfg.data), device="meta")
    dmp = shard_model(model, cfg, device=torch.device("cuda", local_rank))
    dmp.plan            # the ShardingPlan; dmp.fused_optimizer: the in-backward embedding optimizer

Without processes (``dlrm-scale plan``)::

    prepare_model(model, cfg)
    result = plan_tables(model, cfg, world_size=64, compute_device="cuda", local_world_size=8)
    print(describe_plan(result.plan, result.estimate))
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.planner import EmbeddingShardingPlanner, Topology
from torchrec.distributed.planner.types import PlannerError, ShardingOption, Stats
from torchrec.distributed.types import ShardingEnv, ShardingPlan

from dlrm_scale.config import Config, ConfigError
from dlrm_scale.sharding.constraints import apply_weight_dtypes, make_constraints, table_configs
from dlrm_scale.sharding.fused_optim import apply_embedding_optimizer
from dlrm_scale.sharding.options import check_options
from dlrm_scale.sharding.report import GIB, PlanEstimate, RankMemory, TableEstimate, describe_plan
from dlrm_scale.sharding.sharders import check_device_support, make_sharders

_DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


class PlanError(ConfigError):
    """No placement of the tables fits the devices; the message says what to change."""


@dataclass(frozen=True, kw_only=True)
class PlanResult:
    plan: ShardingPlan
    estimate: PlanEstimate | None  # None on ranks other than the one that planned


class _EstimateCollector(Stats):
    """Receives the chosen sharding options from the planner (its public ``Stats`` hook, called once a plan is
    found) and keeps their storage per table and per rank."""

    def __init__(self, features: dict[str, list[str]]) -> None:
        self.features = features
        self.estimate: PlanEstimate | None = None

    def log(self, sharding_plan: ShardingPlan, topology: Topology, batch_size: int, *args: Any,
            best_plan: list[ShardingOption] | None = None, **kwargs: Any) -> None:
        if not sharding_plan.plan or not best_plan:
            return  # the planner reports a failed search too; the error is raised right after
        tables = {}
        hbm = [0] * topology.world_size
        ddr = [0] * topology.world_size
        for option in best_plan:
            for shard in option.shards:
                hbm[shard.rank] += shard.storage.hbm
                ddr[shard.rank] += shard.storage.ddr
            rows, dim = option.tensor.shape
            tables[option.name] = TableEstimate(
                rows=rows, dim=dim, weight_dtype=_DTYPE_NAMES.get(option.tensor.dtype, str(option.tensor.dtype)),
                features=self.features.get(option.name, []),
                hbm_bytes=sum(s.storage.hbm for s in option.shards),
                ddr_bytes=sum(s.storage.ddr for s in option.shards),
            )
        self.estimate = PlanEstimate(
            world_size=topology.world_size, compute_device=topology.compute_device,
            local_world_size=topology.local_world_size, batch_size_per_rank=batch_size, tables=tables,
            ranks=[RankMemory(rank=r, hbm_bytes=hbm[r], ddr_bytes=ddr[r], hbm_cap_bytes=device.storage.hbm,
                              ddr_cap_bytes=device.storage.ddr) for r, device in enumerate(topology.devices)],
        )


def prepare_model(model: nn.Module, cfg: Config) -> None:
    """Readies an unsharded model for planning, in place: table weight dtypes from ``sharding.weight_dtype``, then
    the fused embedding optimizer from ``optimizer.embedding`` (whose state the planner then counts)."""
    apply_weight_dtypes(model, cfg.sharding)
    apply_embedding_optimizer(model, cfg.optimizer.embedding)


def make_topology(cfg: Config, *, world_size: int, compute_device: str,
                  local_world_size: int | None = None) -> Topology:
    """HBM/DDR per rank from ``sharding.hbm_gb`` / ``sharding.ddr_gb`` (GiB); unset HBM on a present CUDA device is
    its real memory, otherwise TorchRec's defaults (32 GiB HBM, 128 GiB DDR per rank)."""
    if compute_device not in ("cpu", "cuda"):
        raise ConfigError(f"compute device must be 'cpu' or 'cuda', got {compute_device!r}")
    hbm_cap = None if cfg.sharding.hbm_gb is None else int(cfg.sharding.hbm_gb * GIB)
    if hbm_cap is None and compute_device == "cuda" and torch.cuda.is_available():
        hbm_cap = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    ddr_cap = None if cfg.sharding.ddr_gb is None else int(cfg.sharding.ddr_gb * GIB)
    return Topology(world_size=world_size, compute_device=compute_device, hbm_cap=hbm_cap, ddr_cap=ddr_cap,
                    local_world_size=local_world_size or world_size)


def _does_not_fit(message: str, cfg: Config, topology: Topology) -> PlanError:
    hbm = topology.devices[0].storage.hbm / GIB
    return PlanError(
        f"TorchRec's planner found no placement of the embedding tables on {topology.world_size} x "
        f"{topology.compute_device} ({hbm:.0f} GiB HBM, {topology.devices[0].storage.ddr / GIB:.0f} GiB DDR per "
        f"rank, batch {cfg.train.batch_size} per rank). To make it fit: use more ranks; raise sharding.hbm_gb / "
        f"sharding.ddr_gb (--hbm-gb/--ddr-gb) if the devices have more; set sharding.weight_dtype = \"fp16\" "
        f"(half the bytes); on CUDA let big tables use sharding.default_kernel = \"fused_uvm_caching\" (rows in host "
        f"memory, a cache in HBM) or leave the kernel unset so the planner may; pick an embedding optimizer with "
        f"less state (rowwise_adagrad, sgd); or lower train.batch_size. Remove sharding constraints that rule "
        f"placements out.\nPlanner: {message}"
    )


def plan_tables(model: nn.Module, cfg: Config, *, world_size: int, compute_device: str,
                local_world_size: int | None = None, pg: dist.ProcessGroup | None = None) -> PlanResult:
    """Plans the tables of a prepared (``prepare_model``) unsharded model, returning the plan and, in the
    process that planned, its memory estimate. With ``pg`` the plan is computed on the group's rank 0 and
    broadcast (as ``EmbeddingShardingPlanner.collective_plan`` does), errors included, so a plan that does not
    fit fails on every rank rather than leaving the others waiting. On NCCL the broadcast uses the current CUDA
    device, which must be this rank's (``torch.cuda.set_device``)."""
    check_options(cfg)
    check_device_support(cfg.sharding, cfg.optimizer.embedding.name, compute_device)
    topology = make_topology(cfg, world_size=world_size, compute_device=compute_device,
                             local_world_size=local_world_size)
    collector = _EstimateCollector({table.name: list(table.feature_names) for table in table_configs(model)})
    planner = EmbeddingShardingPlanner(topology=topology, batch_size=cfg.train.batch_size,
                                       constraints=make_constraints(model, cfg), stats=[collector], debug=False)
    sharders = make_sharders(cfg.sharding, compute_device)
    if pg is None:
        try:
            plan = planner.plan(model, sharders)
        except PlannerError as exc:
            raise _does_not_fit(str(exc), cfg, topology) from exc
        return PlanResult(plan=plan, estimate=collector.estimate)
    outcome: list[Any] = [None]
    if dist.get_rank(pg) == 0:
        try:
            outcome[0] = planner.plan(model, sharders)
        except PlannerError as exc:
            outcome[0] = str(exc)
    dist.broadcast_object_list(outcome, src=dist.get_global_rank(pg, 0), group=pg)
    if isinstance(outcome[0], str):
        raise _does_not_fit(outcome[0], cfg, topology)
    return PlanResult(plan=outcome[0], estimate=collector.estimate)


def make_plan(model: nn.Module, cfg: Config, *, world_size: int, compute_device: str,
              local_world_size: int | None = None, pg: dist.ProcessGroup | None = None) -> ShardingPlan:
    """The ``ShardingPlan`` for the tables of ``model`` (see :func:`plan_tables`). Call :func:`prepare_model`
    first so the plan accounts for the weight dtypes and the embedding optimizer's state."""
    return plan_tables(model, cfg, world_size=world_size, compute_device=compute_device,
                       local_world_size=local_world_size, pg=pg).plan


def shard_model(model: nn.Module, cfg: Config, *, device: torch.device,
                pg: dist.ProcessGroup | None = None) -> DistributedModelParallel:
    """Shards ``model`` (an unsharded model, tables usually on ``meta``) over ``pg`` (default: the world).

    Applies the weight dtypes and the fused embedding optimizer (:func:`prepare_model`), plans on rank 0 with the
    group's size and ``LOCAL_WORLD_SIZE`` ranks per host, and wraps the model in ``DistributedModelParallel``:
    each rank materialises and initialises only its own shards (from its current RNG state), and the dense part
    is wrapped in DDP, which broadcasts rank 0's dense parameters, so they start identical on every rank. Rank 0
    prints the plan with its memory estimate.
    """
    pg = pg if pg is not None else dist.group.WORLD
    world_size = dist.get_world_size(pg)
    local_world_size = min(int(os.environ.get("LOCAL_WORLD_SIZE", world_size)), world_size)
    prepare_model(model, cfg)
    result = plan_tables(model, cfg, world_size=world_size, compute_device=device.type,
                         local_world_size=local_world_size, pg=pg)
    dmp = DistributedModelParallel(module=model, env=ShardingEnv.from_process_group(pg), device=device,
                                   plan=result.plan, sharders=make_sharders(cfg.sharding, device.type))
    if dist.get_rank(pg) == 0:
        print(f"== sharding plan ({world_size} ranks, {device.type})\n{describe_plan(result.plan, result.estimate)}",
              flush=True)
    return dmp
