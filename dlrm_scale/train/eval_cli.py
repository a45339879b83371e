"""Evaluate a trained checkpoint on a split: AUC, logloss, normalized entropy (NE) and accuracy, exact over all
ranks and all rows of the split (padding excluded).

``--run-dir DIR`` is all it needs: the model and data come from the run's ``config.toml`` (the one stored in the
checkpoint), the checkpoint is the newest under ``DIR/checkpoints`` (or ``--checkpoint``). ``--set`` may change
what is read (``data.path``, ``train.eval_batch_size``...), never the model: a model-shaping difference from the
checkpoint's configuration is a one-line error. Only the model is read, and DCP reshards it, so the number of
ranks may differ from the training job's. Launch like training, e.g.
``torchrun --nproc_per_node=2 -m dlrm_scale.cli eval --run-dir runs/latest --split test``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dlrm_scale.config import Config, ConfigError, add_config_arguments, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--run-dir", default="", metavar="DIR",
                        help="the run folder written by `train` (config and checkpoints); without it: --config's "
                             "train.out_dir")
    parser.add_argument("--checkpoint", default="",
                        help="checkpoint directory; empty: the newest under <run folder>/checkpoints")
    parser.add_argument("--split", default="", help="split to evaluate; empty: data.eval_split")
    parser.add_argument("--max-batches", type=int, default=-1,
                        help="evaluate only the first N batches per rank (0: all; -1: train.eval_max_batches)")
    parser.add_argument("--json", dest="json_path", default="", help="also write the metrics to this JSON file (rank 0)")


def resolve(args: argparse.Namespace) -> tuple[Config, Path]:
    """The configuration to evaluate with and the checkpoint, checked against each other without reading it."""
    from dlrm_scale.data.manifest import UNLABELED_SPLIT
    from dlrm_scale.train.cli import check_splits, preflight
    from dlrm_scale.train.run_dir import (
        MODEL_PREFIXES,
        ResumeError,
        differences,
        latest_checkpoint,
        saved_config,
    )

    if args.run_dir:
        cfg = load_config(args.run_dir, [*args.overrides, f"train.out_dir={args.run_dir}"])
    else:
        cfg = load_config(args.config, args.overrides)
        if not cfg.train.out_dir and not args.checkpoint:
            raise ResumeError("which run? pass --run-dir DIR (e.g. runs/latest) or --checkpoint DIR")
    run = Path(cfg.train.out_dir)
    path = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(run)
    if path is None or not (path / ".metadata").is_file():
        raise ResumeError(f"no checkpoint {'at ' + str(path) if path else 'under ' + str(run / 'checkpoints')}; "
                          f"train first, or pass --checkpoint DIR")
    preflight(cfg)
    split = args.split or cfg.data.eval_split
    if split == UNLABELED_SPLIT:  # AUC and logloss against its placeholder labels (-1) would mean nothing
        raise ConfigError(f"split {split!r} has no labels, so it cannot be evaluated; score it with "
                          f"`dlrm-scale export --run-dir {run}` then `dlrm-scale predict`")
    check_splits(cfg, [split])
    trained = saved_config(path.parent.parent, path)
    if trained is not None:
        changed = differences(trained, cfg, ignore=frozenset(), only=MODEL_PREFIXES)
        if changed:
            raise ResumeError(f"{path} holds another model than this configuration describes: {'; '.join(changed)}."
                              f" Evaluate with the run's own configuration: --run-dir {path.parent.parent} "
                              f"without those --set")
    return cfg, path


def run(args: argparse.Namespace) -> int:
    from dlrm_scale.quiet import install as quiet_warnings

    quiet_warnings()
    cfg, path = resolve(args)
    split = args.split or cfg.data.eval_split
    max_batches = cfg.train.eval_max_batches if args.max_batches < 0 else args.max_batches

    import torch.distributed as dist

    from dlrm_scale.checkpoint import Checkpointer
    from dlrm_scale.data.loader import make_loader
    from dlrm_scale.train.build import build_sharded_model, init_distributed
    from dlrm_scale.train.evaluate import evaluate
    from dlrm_scale.train.steps import BatchRunner

    env = init_distributed(cfg.train)
    try:
        model = build_sharded_model(cfg, env)
        state = {"model": model.state_dict()}
        Checkpointer(path.parent).load(path, state)
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
