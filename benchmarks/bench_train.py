"""End-to-end training throughput per rank: dlrm_scale vs TorchRec's own DLRM example path, in the same run.

For each preset (``criteo_kaggle``, ``criteo_terabyte`` (40M cap), ``mlperf_dcnv2`` (multi-hot, DCNv2)) on
synthetic data with the preset's real cardinalities (``--scale-tables F`` multiplies every cardinality by F, floor
1, for CPU smoke runs or GPUs without the memory), each implementation trains the same batches:

- ``ours``: ``build_sharded_model`` (``build_dlrm`` + ``ModelWithLoss`` + ``shard_model``) +
  ``make_dense_optimizer``, stepped by the trainer's ``BatchRunner`` (``TrainPipelineSparseDist`` when
  ``train.pipeline``) plus the LR scheduler step, exactly as ``dlrm-scale train`` steps it;
- ``torchrec``: ``torchrec.models.dlrm.DLRM`` (``DLRM_DCN`` for a ``dcnv2`` interaction) in ``DLRMTrain``, the
  embedding optimizer fused via ``apply_optimizer_in_backward`` on ``model.sparse_arch``, TorchRec's
  ``EmbeddingShardingPlanner`` (5% heuristic storage reservation) with ``get_default_sharders()``,
  ``DistributedModelParallel``, a ``KeyedOptimizerWrapper`` over the non-fused parameters combined with the fused
  one, and ``TrainPipelineSparseDist``: how ``torchrec_dlrm/dlrm_main.py`` builds it. Same table sizes, embedding
  dim, MLPs, optimizers (classes and hyper-parameters from the config), topology (HBM/DDR from the config) and
  sharding constraints (``--set sharding.default_kernel=...``); table weight dtypes from ``sharding.weight_dtype``
  are applied to both, so tables larger than HBM can run as fp16 or UVM-cached in both. TorchRec's example has no
  mixed precision: with ``train.bf16`` on (the DCNv2 preset) its ``DLRMTrain`` forward runs under the same bfloat16
  autocast as ours, so both compute in the same precision (``--set train.bf16=false`` compares fp32 with fp32).

Batches come from our synthetic loader (``make_loader`` with ``data.source = "synthetic"``): ``--distinct-batches`` batches per
rank are drawn once, kept in host memory (pinned on CUDA) and cycled through by both implementations, so both see
identical data and the loader's cost is not part of the step. Each step is one ``pipeline.progress`` (forward,
backward, fused embedding update, dense optimizer step, next batches' copies and input all-to-all in flight),
followed by a device synchronisation; a step's time is the slowest rank's (``all_reduce`` MAX), and the table gives
the median over ``--steps`` steps after ``--warmup`` untimed ones. samples/s per rank = batch size / median step
time; ratio = our samples/s / TorchRec's samples/s in the same run (> 1: ours is faster).

Output: a table on rank 0, and ``benchmarks/results/<date>_<device>/train_<time>.{json,md}`` (one JSON record per
measurement). GPU command (one process per GPU; the DCNv2 tables need fp16 weights or UVM caching on one H100)::

    torchrun --nproc_per_node=1 benchmarks/bench_train.py --presets criteo_kaggle criteo_terabyte mlperf_dcnv2 \\
        --batch-size 8192 --steps 50 --warmup 10 --set sharding.weight_dtype=fp16

CPU smoke run (gloo)::

    torchrun --nproc_per_node=2 benchmarks/bench_train.py --presets criteo_kaggle --scale-tables 1e-4 \\
        --batch-size 64 --steps 3 --warmup 1
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

if __package__ in (None, ""):  # run as a script (torchrun benchmarks/bench_train.py): make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import device_label, device_name, markdown_table, results_dir, synchronize  # noqa: E402
from dlrm_scale.config import Config, load_config  # noqa: E402
from dlrm_scale.train.build import DistEnv, init_distributed, seed_everything  # noqa: E402

PRESETS = ("criteo_kaggle", "criteo_terabyte", "mlperf_dcnv2")
IMPLEMENTATIONS = ("ours", "torchrec")
REFERENCE = "torchrec"


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepRunner:
    """``step()`` runs one training step of a built implementation; ``dense_dtype`` names its dense precision."""

    step: Callable[[], object]
    dense_dtype: str


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), help="config presets to measure")
    parser.add_argument("--batch-size", type=int, default=8192, help="batch size per rank")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (pipeline fill, allocator)")
    parser.add_argument("--scale-tables", type=float, default=1.0,
                        help="multiply every cardinality by F (floor 1), e.g. 1e-4 for a CPU smoke run")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every preset, e.g. sharding.weight_dtype=fp16 (repeatable)")
    parser.add_argument("--implementations", default=",".join(IMPLEMENTATIONS),
                        help="comma-separated subset of: " + ", ".join(IMPLEMENTATIONS))
    parser.add_argument("--distinct-batches", type=int, default=16,
                        help="distinct batches per rank, cycled through (bounds host memory)")
    parser.add_argument("--out", type=Path, default=None, help="results folder (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    args.implementations = [name.strip() for name in args.implementations.split(",") if name.strip()]
    unknown = sorted(set(args.implementations) - set(IMPLEMENTATIONS))
    if unknown or not args.implementations:
        parser.error(f"--implementations: unknown {unknown}; choose from {', '.join(IMPLEMENTATIONS)}")
    if args.batch_size <= 0 or args.steps <= 0 or args.warmup < 0 or args.distinct_batches <= 0:
        parser.error("--batch-size, --steps and --distinct-batches must be positive, --warmup non-negative")
    if args.scale_tables <= 0:
        parser.error("--scale-tables must be positive")
    return args


def bench_config(preset: str, args: argparse.Namespace, world_size: int) -> Config:
    """The preset with ``--set`` overrides, the batch size, scaled cardinalities, and enough synthetic rows."""
    cfg = load_config(preset, args.overrides)
    cfg.data.path = ""
    cfg.data.source = "synthetic"
    cfg.data.cardinalities = [max(1, int(card * args.scale_tables)) for card in cfg.data.cardinalities]
    cfg.train.batch_size = args.batch_size
    cfg.data.synthetic_rows = max(cfg.data.synthetic_rows, args.distinct_batches * args.batch_size * world_size)
    return cfg


def draw_batches(cfg: Config, env: DistEnv, count: int) -> list:
    """This rank's first ``count`` training batches of the synthetic loader, in host memory."""
    from dlrm_scale.data.loader import make_loader

    loader = make_loader(cfg.data, split=cfg.data.train_split, batch_size=cfg.train.batch_size, rank=env.rank,
                         world_size=env.world_size, seed=cfg.train.seed, train=True, device=torch.device("cpu"))
    loader.set_epoch(0)
    batches = list(itertools.islice(iter(loader), count))
    if len(batches) < count:
        raise RuntimeError(f"the synthetic loader gave {len(batches)} batches, {count} were asked for")
    return batches


def build_ours(cfg: Config, env: DistEnv, batches: Iterator) -> StepRunner:
    from dlrm_scale.train.build import build_sharded_model
    from dlrm_scale.train.optim import make_dense_optimizer
    from dlrm_scale.train.steps import BatchRunner

    model = build_sharded_model(cfg, env)
    optimizer, scheduler = make_dense_optimizer(model, cfg.optimizer.dense)
    model.train()
    outputs = BatchRunner(model, optimizer, env.device, pipelined=cfg.train.pipeline).run(batches)

    def step() -> object:
        out = next(outputs)
        scheduler.step()
        return out

    return StepRunner(step=step, dense_dtype=_dense_dtype(cfg))


def _dense_dtype(cfg: Config) -> str:
    return "bf16-autocast" if cfg.train.bf16 else "fp32"


def _autocast_train_module(train_class: type, *, bf16: bool, device_type: str) -> type:
    """``train_class`` itself, or (``bf16``) a subclass whose ``forward(batch)`` runs under bfloat16 autocast on
    ``device_type``, as ``ModelWithLoss`` runs ours."""
    if not bf16:
        return train_class

    class AutocastTrain(train_class):
        def forward(self, batch):
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                return super().forward(batch)

    return AutocastTrain


def build_torchrec(cfg: Config, env: DistEnv, batches: Iterator) -> StepRunner:
    """TorchRec's DLRM example path (``torchrec_dlrm/dlrm_main.py``) on the config's shapes and optimizers."""
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.planner import EmbeddingShardingPlanner
    from torchrec.distributed.planner.storage_reservations import HeuristicalStorageReservation
    from torchrec.distributed.sharding_plan import get_default_sharders
    from torchrec.distributed.train_pipeline import TrainPipelineSparseDist
    from torchrec.models.dlrm import DLRM, DLRM_DCN, DLRMTrain
    from torchrec.modules.embedding_modules import EmbeddingBagCollection
    from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
    from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
    from torchrec.optim.optimizers import in_backward_optimizer_filter

    from dlrm_scale.config import sparse_feature_names
    from dlrm_scale.data.loader import table_sizes
    from dlrm_scale.models.dlrm import embedding_bag_configs
    from dlrm_scale.sharding.constraints import apply_weight_dtypes, make_constraints
    from dlrm_scale.sharding.fused_optim import embedding_optimizer
    from dlrm_scale.sharding.planner import make_topology
    from dlrm_scale.train.optim import DENSE_OPTIMIZERS, dense_optimizer_kwargs

    seed_everything(cfg.train.seed)
    sizes = table_sizes(cfg.data)
    ebc = EmbeddingBagCollection(tables=embedding_bag_configs(sizes, cfg.model.embedding_dim,
                                                              sparse_feature_names(len(sizes))),
                                 device=torch.device("meta"))
    common = {"embedding_bag_collection": ebc, "dense_in_features": cfg.data.num_dense,
              "dense_arch_layer_sizes": list(cfg.model.bottom_mlp),
              "over_arch_layer_sizes": list(cfg.model.top_mlp), "dense_device": env.device}
    interaction = cfg.model.interaction
    if interaction.name == "dcnv2":
        dlrm = DLRM_DCN(**common, dcn_num_layers=int(interaction.params["num_layers"]),
                        dcn_low_rank_dim=int(interaction.params["low_rank"]))
    elif interaction.name in ("dot", "dot_fused"):
        dlrm = DLRM(**common)
    else:
        raise ValueError(f"TorchRec's DLRM example has no {interaction.name!r} interaction (dot or dcnv2 only)")
    train_model = _autocast_train_module(DLRMTrain, bf16=cfg.train.bf16, device_type=env.device.type)(dlrm)
    apply_weight_dtypes(train_model, cfg.sharding)
    optimizer_class, optimizer_kwargs = embedding_optimizer(cfg.optimizer.embedding)
    apply_optimizer_in_backward(optimizer_class, train_model.model.sparse_arch.parameters(), optimizer_kwargs)

    planner = EmbeddingShardingPlanner(
        topology=make_topology(cfg, world_size=env.world_size, compute_device=env.device.type,
                               local_world_size=min(env.local_world_size, env.world_size)),
        batch_size=cfg.train.batch_size, constraints=make_constraints(train_model, cfg),
        storage_reservation=HeuristicalStorageReservation(percentage=0.05))
    sharders = get_default_sharders()
    plan = planner.collective_plan(train_model, sharders, dist.GroupMember.WORLD)
    seed_everything(cfg.train.seed + env.rank)
    model = DistributedModelParallel(module=train_model, device=env.device, plan=plan, sharders=sharders)

    dense_class, dense_kwargs = DENSE_OPTIMIZERS[cfg.optimizer.dense.name], dense_optimizer_kwargs(cfg.optimizer.dense)
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(model.named_parameters())),
                                  lambda params: dense_class(params, **dense_kwargs))
    optimizer = CombinedOptimizer([model.fused_optimizer, dense])
    model.train()
    pipeline = TrainPipelineSparseDist(model, optimizer, env.device)
    return StepRunner(step=lambda: pipeline.progress(batches), dense_dtype=_dense_dtype(cfg))


BUILDERS: dict[str, Callable[[Config, DistEnv, Iterator], StepRunner]] = {
    "ours": build_ours, "torchrec": build_torchrec,
}


def time_steps(runner: StepRunner, env: DistEnv, *, warmup: int, steps: int) -> list[float]:
    """Milliseconds of each timed step, the slowest rank's, after ``warmup`` untimed steps."""
    for _ in range(warmup):
        runner.step()
    synchronize(env.device)
    dist.barrier()
    times = []
    for _ in range(steps):
        begin = time.perf_counter()
        runner.step()
        synchronize(env.device)
        times.append((time.perf_counter() - begin) * 1e3)
    slowest = torch.tensor(times, dtype=torch.float64, device=env.device)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    return slowest.tolist()


def measure(preset: str, implementation: str, args: argparse.Namespace, env: DistEnv,
            batches: list, cfg: Config) -> dict[str, Any]:
    runner = BUILDERS[implementation](cfg, env, itertools.cycle(batches))
    times = time_steps(runner, env, warmup=args.warmup, steps=args.steps)
    median_ms = statistics.median(times)
    record = {
        "benchmark": "train", "implementation": implementation, "preset": preset,
        "interaction": cfg.model.interaction.name, "batch_size": cfg.train.batch_size,
        "world_size": env.world_size, "dtype": runner.dense_dtype, "weight_dtype": cfg.sharding.weight_dtype,
        "default_kernel": cfg.sharding.default_kernel, "scale_tables": args.scale_tables,
        "cardinalities_sum": sum(cfg.data.cardinalities), "multi_hot": bool(cfg.data.multi_hot_sizes),
        "embedding_dim": cfg.model.embedding_dim, "steps": args.steps, "warmup": args.warmup,
        "compiled_mlps": implementation == "ours" and cfg.train.compile,
        "median_ms": median_ms, "min_ms": min(times), "max_ms": max(times),
        "samples_per_s_per_rank": cfg.train.batch_size / (median_ms * 1e-3), "ratio_to_reference": None,
    }
    del runner
    gc.collect()
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
    return record


def add_ratios(records: list[dict[str, Any]]) -> None:
    """ratio = samples/s of the record / samples/s of TorchRec's path on the same preset (None without one)."""
    reference = {r["preset"]: r["samples_per_s_per_rank"] for r in records if r["implementation"] == REFERENCE}
    for record in records:
        if record["preset"] in reference:
            record["ratio_to_reference"] = record["samples_per_s_per_rank"] / reference[record["preset"]]


def to_markdown(records: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    header = ["preset", "implementation", "dtype", "weights", "batch/rank", "ranks", "median ms", "samples/s/rank",
              "ratio vs torchrec"]
    rows = [[r["preset"], r["implementation"], r["dtype"], r["weight_dtype"], str(r["batch_size"]),
             str(r["world_size"]), f"{r['median_ms']:.2f}", f"{r['samples_per_s_per_rank']:,.0f}",
             "-" if r["ratio_to_reference"] is None else f"{r['ratio_to_reference']:.2f}x"] for r in records]
    lines = [f"# Training throughput ({meta['device']}, {meta['date']})", "",
             f"Synthetic data, tables scaled by {meta['scale_tables']}, overrides {meta['overrides'] or 'none'}, "
             f"median of {meta['steps']} steps after {meta['warmup']} warm-up steps; a step's time is the slowest "
             f"rank's. Ratio: samples/s over TorchRec's DLRM example path in the same run.", "",
             markdown_table(header, rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = init_distributed(load_config(args.presets[0], args.overrides).train)
    records = []
    for preset in args.presets:
        cfg = bench_config(preset, args, env.world_size)
        batches = draw_batches(cfg, env, min(args.distinct_batches, args.warmup + args.steps + 3))
        for implementation in args.implementations:
            records.append(measure(preset, implementation, args, env, batches, cfg))
        del batches
    add_ratios(records)
    if env.rank == 0:
        meta = {"device": device_name(env.device), "device_label": device_label(env.device),
                "date": dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
                "world_size": env.world_size, "scale_tables": args.scale_tables, "overrides": args.overrides,
                "steps": args.steps, "warmup": args.warmup}
        markdown = to_markdown(records, meta)
        print(markdown, flush=True)
        out_dir = args.out or results_dir(env.device)
        out_dir.mkdir(parents=True, exist_ok=True)
        tag = dt.datetime.now().strftime("%H%M%S")
        (out_dir / f"train_{tag}.json").write_text(json.dumps({"meta": meta, "records": records}, indent=2) + "\n")
        (out_dir / f"train_{tag}.md").write_text(markdown)
        print(f"wrote {out_dir / f'train_{tag}.json'}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
