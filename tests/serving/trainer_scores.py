"""The trainer's evaluation forward on one split of a run, per row: ``python trainer_scores.py RUN_DIR SPLIT OUT``.

Builds the sharded model as ``dlrm-scale eval`` does (world size 1: DCP reshards a checkpoint of any world size),
loads the newest checkpoint, runs the eval loader in file order through ``BatchRunner`` and saves the real rows'
logits to OUT (``.npy``, float32). Run in its own process: it creates a process group."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from dlrm_scale.checkpoint import Checkpointer
from dlrm_scale.config import load_config
from dlrm_scale.data.loader import make_loader
from dlrm_scale.train.build import build_sharded_model, init_distributed
from dlrm_scale.train.steps import BatchRunner


def main(run_dir: str, split: str, out: str) -> None:
    cfg = load_config(str(Path(run_dir) / "config.toml"))
    env = init_distributed(cfg.train)
    try:
        model = build_sharded_model(cfg, env)
        checkpointer = Checkpointer(Path(run_dir) / "checkpoints")
        state = {"model": model.state_dict()}
        checkpointer.load(checkpointer.latest(), state)
        model.load_state_dict(state["model"])
        model.eval()
        loader = make_loader(cfg.data, split=split, batch_size=cfg.train.eval_batch_size or cfg.train.batch_size,
                             rank=0, world_size=1, seed=cfg.train.seed, train=False, device=env.device)
        runner = BatchRunner(model, model.fused_optimizer, env.device, pipelined=cfg.train.pipeline)
        logits = []
        with torch.no_grad():
            for output in runner.run(iter(loader)):
                logits.append(output.logits[output.mask > 0])
        np.save(out, torch.cat(logits).float().numpy())
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
