"""Train a DLRM with TorchRec-sharded embedding tables.

One process per rank: launch with torchrun (``torchrun --nproc_per_node=2 -m dlrm_scale.cli train --config
tiny_cpu --set data.path=DATA``), torchx (``launch/components.py``) or ``launch/torchrun.sh``; run directly it
trains as a world of one. The plan (which rank holds which table) is printed first, then progress, periodic
metrics, and a summary.

Each run writes one folder (``train.out_dir``; empty: a new ``runs/<preset>-<timestamp>``, and ``runs/latest``
points at it): ``config.toml`` (the resolved configuration, also stored in every checkpoint), ``checkpoints/``,
``metrics.jsonl`` and (``train.tensorboard``) ``tensorboard/``. ``--run-dir DIR`` continues the run in DIR from
its newest checkpoint with its own configuration (``--set`` may change only how long to train and how often to
log, evaluate and checkpoint); a different model, sharding, optimizer or data order is refused before anything
is read or written. ``--dry-run`` checks the configuration, the data contract and the sharding plan (TorchRec's
planner on a model built on ``meta``: no tables are allocated) and exits, so a 40M-row preset can be checked
against its data on a laptop.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from dlrm_scale.config import (
    Config,
    ConfigError,
    add_config_arguments,
    check_data_source,
    check_interaction,
    load_config,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--run-dir", default="", metavar="DIR",
                        help="continue the run in DIR (its config.toml and newest checkpoint); --set may extend it")
    parser.add_argument("--dry-run", action="store_true",
                        help="check config, data contract and sharding plan without building tables, then exit")
    parser.add_argument("--world-size", type=int, default=0, metavar="N",
                        help="--dry-run: ranks to plan for (0: WORLD_SIZE from torchrun, else 1)")


def format_summary(summary: dict) -> str:
    lines = ["== summary"]
    for key, value in summary.items():
        lines.append(f"  {key:<18} {value:.6g}" if isinstance(value, float) else f"  {key:<18} {value}")
    return "\n".join(lines)


def resolve_config(args: argparse.Namespace) -> Config:
    """The run's configuration: the preset and ``--set``, or (``--run-dir``) the run's own ``config.toml``."""
    if args.run_dir:
        return load_config(args.run_dir, [*args.overrides, f"train.out_dir={args.run_dir}", "train.resume=true"])
    return load_config(args.config, args.overrides)


def preflight(cfg: Config) -> None:
    """Everything a user can get wrong, checked on every rank before any process group, model or file: the
    interaction's params, the data source and contract (the table sizes become ``data.cardinalities``, so the
    saved configuration describes the model exactly), and that each split read has rows."""
    from dlrm_scale.data.loader import table_sizes

    check_interaction(cfg.model)
    check_data_source(cfg.data)
    cfg.data.cardinalities = table_sizes(cfg.data)
    check_splits(cfg, [cfg.data.train_split, cfg.data.eval_split])


def check_splits(cfg: Config, splits: list[str]) -> None:
    """Each named split has rows: an empty one would train 0 steps or evaluate nothing without saying so."""
    from dlrm_scale.data.manifest import Manifest

    for split in filter(None, splits):
        if cfg.data.source == "synthetic":
            rows = cfg.data.synthetic_rows
            fix = "raise data.synthetic_rows"
        else:
            rows = Manifest.load(cfg.data.path).split(split).rows
            fix = "prepare data with rows in it, or name another split (data.train_split / data.eval_split)"
        if rows == 0:
            where = "synthetic data" if cfg.data.source == "synthetic" else cfg.data.path
            raise ConfigError(f"split {split!r} of {where} has no rows: {fix}"
                              + (" or --set data.eval_split=\"\" to skip evaluation" if split == cfg.data.eval_split
                                 else ""))


def dry_run(cfg: Config, args: argparse.Namespace, world_size: int) -> int:
    """Plans the sharding with TorchRec's planner on a ``meta`` model (nothing allocated) and reports."""
    import torch

    from dlrm_scale.models.dlrm import build_dlrm
    from dlrm_scale.quiet import quiet_planner
    from dlrm_scale.sharding.planner import plan_tables, prepare_model
    from dlrm_scale.sharding.report import describe_plan

    quiet_planner()
    device = "cuda" if cfg.train.device == "cuda" or (cfg.train.device == "auto" and torch.cuda.is_available()) \
        else "cpu"
    with torch.device("meta"):
        model = build_dlrm(cfg.model, cfg.data.cardinalities, num_dense=cfg.data.num_dense, device="meta")
    prepare_model(model, cfg)
    result = plan_tables(model, cfg, world_size=world_size, compute_device=device,
                         local_world_size=min(8, world_size))
    print(f"== sharding plan ({world_size} x {device})\n{describe_plan(result.plan, result.estimate)}")
    source = f"synthetic ({cfg.data.synthetic_rows:,} rows)" if cfg.data.source == "synthetic" else cfg.data.path
    print(f"dry run OK: config {args.run_dir or args.config}, data {source}, "
          f"{len(cfg.data.cardinalities)} tables ({sum(cfg.data.cardinalities):,} rows), "
          f"interaction {cfg.model.interaction.name}, {world_size} x {device}")
    return 0


def run(args: argparse.Namespace) -> int:
    from dlrm_scale.quiet import install as quiet_warnings
    from dlrm_scale.train import run_dir

    quiet_warnings()
    cfg = resolve_config(args)
    preflight(cfg)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.dry_run and args.world_size:
        world_size = args.world_size
    if cfg.train.out_dir:
        resume_from = run_dir.check_resume(cfg, Path(cfg.train.out_dir), world_size=world_size)
    else:
        resume_from = None
        run_dir.check_restarts_have_a_folder(cfg)
    if args.dry_run:
        if resume_from is not None:
            print(f"would resume {resume_from}")
        return dry_run(cfg, args, world_size)

    import torch.distributed as dist

    from dlrm_scale.config_toml import to_toml
    from dlrm_scale.metrics import write_line
    from dlrm_scale.train.build import build_trainer, init_distributed

    env = init_distributed(cfg.train)
    try:
        if not cfg.train.out_dir:
            preset = run_dir.preset_name(args.config)
            cfg.train.out_dir = run_dir.share_run_dir(env.rank, lambda: run_dir.create_run_dir(preset))
        if env.rank == 0:
            out_dir = Path(cfg.train.out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            origin = f"--run-dir {args.run_dir}" if args.run_dir else f"--config {args.config}"
            (out_dir / run_dir.CONFIG_NAME).write_text(to_toml(cfg, header=f"dlrm-scale train {origin}"))
            write_line(f"run folder: {out_dir}")
            if cfg.data.source == "synthetic":
                write_line(f"data: synthetic batches (data.source = \"synthetic\"): {cfg.data.synthetic_rows:,} "
                           f"rows drawn from data.cardinalities, evaluation on "
                           f"{min(cfg.data.synthetic_rows, cfg.data.synthetic_eval_rows):,}; not real data")
        trainer = build_trainer(cfg, env)
        summary = trainer.fit()
        trainer.logger.close()
        if env.rank == 0:
            print(format_summary(summary), flush=True)
    finally:
        dist.destroy_process_group()
    return 0
