"""Evaluate a trained checkpoint on a split: AUC, logloss, normalized entropy (NE) and accuracy, exact over all
ranks and all rows of the split (padding excluded).

Uses the same config as training (the model shape and data must match the checkpoint). ``--checkpoint`` defaults
to the newest checkpoint under ``<train.out_dir>/checkpoints``. Only the model is read, and DCP reshards it, so
the number of ranks may differ from the training job's. Launch like training, e.g.
``torchrun --nproc_per_node=2 -m dlrm_scale.cli eval --config tiny_cpu --split test``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dlrm_scale.config import add_config_arguments, config_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", default="",
                        help="checkpoint directory; empty: the newest under <train.out_dir>/checkpoints")
    parser.add_argument("--split", default="", help="split to evaluate; empty: data.eval_split")
    parser.add_argument("--max-batches", type=int, default=-1,
                        help="evaluate only the first N batches per rank (0: all; -1: train.eval_max_batches)")
    parser.add_argument("--json", dest="json_path", default="", help="also write the metrics to this JSON file (rank 0)")


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    split = args.split or cfg.data.eval_split
    max_batches = cfg.train.eval_max_batches if args.max_batches < 0 else args.max_batches

    import torch.distributed as dist

    from dlrm_scale.checkpoint import Checkpointer
    from dlrm_scale.data.loader import make_loader
    from dlrm_scale.train.build import build_sharded_model, init_distributed
    from dlrm_scale.train.evaluate import evaluate
    from dlrm_scale.train.steps import BatchRunner

    checkpointer = Checkpointer(Path(cfg.train.out_dir) / "checkpoints")
    path = Path(args.checkpoint) if args.checkpoint else checkpointer.latest()
    if path is None:
        raise SystemExit(f"no checkpoint under {checkpointer.directory}; pass --checkpoint DIR")
    env = init_distributed(cfg.train)
    try:
        model = build_sharded_model(cfg, env)
        state = {"model": model.state_dict()}
        checkpointer.load(path, state)
        model.load_state_dict(state["model"])
        model.eval()
        loader = make_loader(cfg.data, split=split, batch_size=cfg.train.eval_batch_size or cfg.train.batch_size,
                             rank=env.rank, world_size=env.world_size, seed=cfg.train.seed, train=False,
                             device=env.device)
        runner = BatchRunner(model, model.fused_optimizer, env.device, pipelined=cfg.train.pipeline)
        metrics = evaluate(runner.run, loader, max_batches=max_batches)
        if env.rank == 0:
            print(f"== eval of {path} on split {split!r} ({env.world_size} ranks)")
            for key, value in metrics.as_dict().items():
                print(f"  {key:<9} {value:.6g}" if isinstance(value, float) else f"  {key:<9} {value}")
            if args.json_path:
                record = {"checkpoint": str(path), "split": split, **metrics.as_dict()}
                Path(args.json_path).write_text(json.dumps(record, indent=2) + "\n")
    finally:
        dist.destroy_process_group()
    return 0
