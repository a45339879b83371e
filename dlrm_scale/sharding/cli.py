"""``dlrm-scale plan``: where TorchRec's planner puts each embedding table, and what each rank must hold.

Runs TorchRec's ``EmbeddingShardingPlanner`` on the config's model built on the ``meta`` device, for a cluster you
describe (``--world-size``, ``--device``, ``--hbm-gb``, ``--ddr-gb``, ``--local-world-size``), so you can size a
GPU cluster before renting it: no GPU, no processes, no data. The plan accounts for the config's table sizes,
``data.multi_hot_sizes`` (pooling factors), ``sharding.*`` constraints and weight dtypes, the embedding optimizer's
state and the per-rank ``train.batch_size``. Capacities are GiB per rank.

Example::

    dlrm-scale plan --config mlperf_dcnv2 --world-size 8 --device cuda --hbm-gb 80 --json plan.json

A configuration that fits nowhere fails with a message that says what to change (more ranks, fp16 weights,
UVM caching, a smaller batch).
"""

from __future__ import annotations

import argparse
import json
import logging
import warnings
from pathlib import Path

from dlrm_scale.config import ConfigError, add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--world-size", type=int, required=True, help="number of ranks (GPUs) to plan for")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="compute device of the ranks")
    parser.add_argument("--hbm-gb", type=float, default=None,
                        help="GPU memory per rank in GiB (default: sharding.hbm_gb, else TorchRec's 32)")
    parser.add_argument("--ddr-gb", type=float, default=None,
                        help="host memory per rank in GiB (default: sharding.ddr_gb, else TorchRec's 128)")
    parser.add_argument("--local-world-size", type=int, default=None,
                        help="ranks per host (default: min(8, world size))")
    parser.add_argument("--batch-size", type=int, default=None, help="batch per rank (default: train.batch_size)")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE",
                        help="also write the plan and per-rank memory estimate as JSON to FILE")


def _overrides(args: argparse.Namespace) -> list[str]:
    """Command-line sizes become ordinary config overrides, so they are validated like any other value."""
    extra = []
    if args.hbm_gb is not None:
        extra.append(f"sharding.hbm_gb={args.hbm_gb}")
    if args.ddr_gb is not None:
        extra.append(f"sharding.ddr_gb={args.ddr_gb}")
    if args.batch_size is not None:
        extra.append(f"train.batch_size={args.batch_size}")
    return extra


def _quiet_torchrec() -> None:
    """TorchRec's planner warns about building ``Topology`` directly, about its default storage reservation in
    dry runs and about every data-parallel table; all are expected here and would bury the plan."""
    warnings.filterwarnings("ignore", message=".*HeuristicalStorageReservation.*")
    for name in ("torchrec.distributed.planner.types", "torchrec.distributed.planner.storage_reservations"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # data_parallel tables have no sharding spec by design; TorchRec's plan validation warns about each one
    logging.getLogger().addFilter(lambda record: "Sharding spec not found" not in record.getMessage())


def run(args: argparse.Namespace) -> int:
    if args.world_size <= 0:
        raise SystemExit(f"dlrm-scale plan: --world-size must be positive, got {args.world_size}")
    if args.local_world_size is not None and not 0 < args.local_world_size <= args.world_size:
        raise SystemExit(f"dlrm-scale plan: --local-world-size must be in 1..{args.world_size}, "
                         f"got {args.local_world_size}")
    try:
        args.overrides = [*args.overrides, *_overrides(args)]
        cfg = config_from_args(args)
    except ConfigError as exc:
        raise SystemExit(f"dlrm-scale plan: {exc}") from exc

    import torch

    from dlrm_scale.data.loader import table_sizes
    from dlrm_scale.models.dlrm import build_dlrm
    from dlrm_scale.sharding.planner import plan_tables, prepare_model
    from dlrm_scale.sharding.report import describe_plan, plan_to_json

    _quiet_torchrec()
    try:
        sizes = table_sizes(cfg.data)
        with torch.device("meta"):  # dense layers too: nothing is allocated or initialised
            model = build_dlrm(cfg.model, sizes, num_dense=cfg.data.num_dense, device="meta")
        prepare_model(model, cfg)
        result = plan_tables(model, cfg, world_size=args.world_size, compute_device=args.device,
                             local_world_size=args.local_world_size or min(8, args.world_size))
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"dlrm-scale plan: {exc}") from exc
    print(f"== sharding plan for {args.config}: {args.world_size} x {args.device}")
    print(describe_plan(result.plan, result.estimate))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(plan_to_json(result.plan, result.estimate), indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
