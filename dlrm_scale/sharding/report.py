"""A sharding plan in words and as JSON: where each table goes, and what each rank must hold.

``describe_plan(plan)`` needs only TorchRec's ``ShardingPlan`` (every rank has it after planning); the memory
columns need the :class:`PlanEstimate` that only the planning process has (``dlrm_scale.sharding.planner``).
Memory figures are TorchRec's own storage estimates for each shard: weights, fused-optimizer state, the UVM
cache, and the kernel's input/output buffers for the planned batch size. The planner additionally keeps a share
of each device (15% of HBM by default, plus the replicated dense model and input buffers) out of the tables'
reach, so an estimate close to the capacity is not a sign of trouble.

JSON layout (``plan_to_json``)::

    {"world_size": 8, "compute_device": "cuda", "local_world_size": 8, "batch_size_per_rank": 8192,
     "tables": [{"table": "t_C1", "module": "model.sparse_arch.embedding_bag_collection", "features": ["C1"],
                 "rows": 40000000, "dim": 128, "weight_dtype": "fp32", "sharding_type": "row_wise",
                 "compute_kernel": "fused", "ranks": [0, 1, ...], "hbm_bytes": ..., "ddr_bytes": ...,
                 "shards": [{"rank": 0, "offsets": [0, 0], "sizes": [5000000, 128]}, ...]}, ...],
     "ranks": [{"rank": 0, "hbm_bytes": ..., "ddr_bytes": ..., "hbm_cap_bytes": ..., "ddr_cap_bytes": ...}, ...]}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torchrec.distributed.types import ShardingPlan

GIB = 1024**3


@dataclass(frozen=True, kw_only=True)
class TableEstimate:
    """One table as the planner sized it: shape, weight dtype and the summed storage of all its shards."""

    rows: int
    dim: int
    weight_dtype: str
    features: list[str]
    hbm_bytes: int
    ddr_bytes: int


@dataclass(frozen=True, kw_only=True)
class RankMemory:
    """Bytes of embedding shards placed on one rank, and that rank's device capacities."""

    rank: int
    hbm_bytes: int
    ddr_bytes: int
    hbm_cap_bytes: int
    ddr_cap_bytes: int


@dataclass(frozen=True, kw_only=True)
class PlanEstimate:
    """What the planner knew when it chose the plan: topology, per-rank batch size and storage per table/rank."""

    world_size: int
    compute_device: str
    local_world_size: int
    batch_size_per_rank: int
    tables: dict[str, TableEstimate] = field(default_factory=dict)
    ranks: list[RankMemory] = field(default_factory=list)


def _table_rows(plan: ShardingPlan) -> list[dict[str, Any]]:
    rows = []
    for module_path, module_plan in plan.plan.items():
        for table, sharding in module_plan.items():
            shards = []
            if sharding.sharding_spec is not None:
                for shard in sharding.sharding_spec.shards:
                    shards.append({"rank": shard.placement.rank(), "offsets": list(shard.shard_offsets),
                                   "sizes": list(shard.shard_sizes)})
            rows.append({"table": table, "module": module_path, "sharding_type": sharding.sharding_type,
                         "compute_kernel": sharding.compute_kernel, "ranks": sorted(set(sharding.ranks or [])),
                         "shards": shards})
    return rows


def _ranks_text(ranks: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2,5"``."""
    runs: list[list[int]] = []
    for rank in ranks:
        if runs and rank == runs[-1][-1] + 1:
            runs[-1].append(rank)
        else:
            runs.append([rank])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _gib(num_bytes: int) -> str:
    return f"{num_bytes / GIB:.2f}"


def describe_plan(plan: ShardingPlan, estimate: PlanEstimate | None = None) -> str:
    """A text table: one line per table (sharding type, compute kernel, ranks; shape and GiB with ``estimate``),
    then, with ``estimate``, one line per rank with its HBM/DDR use against capacity."""
    rows = _table_rows(plan)
    header = ["table", "sharding", "kernel", "ranks"]
    lines = []
    for row in rows:
        line = [row["table"], row["sharding_type"], row["compute_kernel"], _ranks_text(row["ranks"])]
        if estimate is not None and row["table"] in estimate.tables:
            table = estimate.tables[row["table"]]
            line += [f"{table.rows}x{table.dim}", table.weight_dtype, _gib(table.hbm_bytes), _gib(table.ddr_bytes)]
        lines.append(line)
    if estimate is not None:
        header += ["rows x dim", "dtype", "HBM GiB", "DDR GiB"]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    text = [" | ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in [header, *lines]]
    text.insert(1, "-+-".join("-" * w for w in widths))
    if estimate is not None:
        text.append("")
        text.append(f"per-rank memory estimate ({estimate.world_size} x {estimate.compute_device}, "
                    f"batch {estimate.batch_size_per_rank} per rank; embedding shards incl. optimizer state):")
        # consecutive ranks with the same figures share a line, so 64 ranks stay readable
        groups: list[tuple[list[int], str]] = []
        for rank in estimate.ranks:
            figures = (f"HBM {_gib(rank.hbm_bytes):>7} / {_gib(rank.hbm_cap_bytes)} GiB, "
                       f"DDR {_gib(rank.ddr_bytes):>7} / {_gib(rank.ddr_cap_bytes)} GiB")
            if groups and groups[-1][1] == figures:
                groups[-1][0].append(rank.rank)
            else:
                groups.append(([rank.rank], figures))
        width = max(len(_ranks_text(ranks)) for ranks, _ in groups)
        text += [f"  rank {_ranks_text(ranks):>{width}}: {figures}" for ranks, figures in groups]
    return "\n".join(text)


def plan_to_json(plan: ShardingPlan, estimate: PlanEstimate) -> dict[str, Any]:
    """The plan and its memory estimate as a JSON-ready dict (layout in the module docstring)."""
    tables = []
    for row in _table_rows(plan):
        table = estimate.tables[row["table"]]
        tables.append({"table": row["table"], "module": row["module"], "features": table.features,
                       "rows": table.rows, "dim": table.dim, "weight_dtype": table.weight_dtype,
                       "sharding_type": row["sharding_type"], "compute_kernel": row["compute_kernel"],
                       "ranks": row["ranks"], "hbm_bytes": table.hbm_bytes, "ddr_bytes": table.ddr_bytes,
                       "shards": row["shards"]})
    return {
        "world_size": estimate.world_size,
        "compute_device": estimate.compute_device,
        "local_world_size": estimate.local_world_size,
        "batch_size_per_rank": estimate.batch_size_per_rank,
        "tables": tables,
        "ranks": [{"rank": r.rank, "hbm_bytes": r.hbm_bytes, "ddr_bytes": r.ddr_bytes,
                   "hbm_cap_bytes": r.hbm_cap_bytes, "ddr_cap_bytes": r.ddr_cap_bytes} for r in estimate.ranks],
    }
