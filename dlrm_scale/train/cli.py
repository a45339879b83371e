"""Train a DLRM with TorchRec-sharded embedding tables.

One process per rank: launch with torchrun (``torchrun --nproc_per_node=2 -m dlrm_scale.cli train --config
tiny_cpu``), torchx (``launch/components.py``) or ``launch/torchrun.sh``; run directly it trains as a world of one.
The plan (which rank holds which table) is printed first, then progress, periodic metrics, and a summary.
Outputs go to ``train.out_dir``: ``metrics.jsonl``, ``checkpoints/``, ``config.json`` and (``train.tensorboard``)
``tensorboard/``. With ``train.resume`` (the default) a run whose out_dir holds a checkpoint continues from it,
which is also how torchrun's ``--max-restarts`` recovers from a lost rank.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dlrm_scale.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def format_summary(summary: dict) -> str:
    lines = ["== summary"]
    for key, value in summary.items():
        lines.append(f"  {key:<18} {value:.6g}" if isinstance(value, float) else f"  {key:<18} {value}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)

    import torch.distributed as dist

    from dlrm_scale.config_toml import to_toml
    from dlrm_scale.train.build import build_trainer, init_distributed

    env = init_distributed(cfg.train)
    try:
        if env.rank == 0:
            out_dir = Path(cfg.train.out_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
            (out_dir / "config.toml").write_text(to_toml(cfg, header=f"dlrm-scale train --config {args.config}"))
        trainer = build_trainer(cfg, env)
        summary = trainer.fit()
        trainer.logger.close()
        if env.rank == 0:
            print(format_summary(summary), flush=True)
    finally:
        dist.destroy_process_group()
    return 0
