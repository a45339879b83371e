"""Run under torchrun by ``test_distributed.py``: trains exactly as ``dlrm-scale train`` does (same builder),
then saves this rank's view of the model to ``<out_dir>/final-rank<r>.pt``:

- ``replicated``: every plain tensor of the DMP state dict (dense layers, data-parallel tables), which DDP must
  keep identical on all ranks;
- ``shards``: for every sharded table (ShardedTensor), its global size and this rank's local shards
  (offsets, sizes), so the test can check that the tables are split between the ranks.

Usage: ``torchrun --nproc_per_node=2 tests/train/dist_train.py --config tiny_cpu --set ...``
"""

from __future__ import annotations

import argparse

import torch
import torch.distributed as dist
from torch.distributed._shard.sharded_tensor import ShardedTensor

from dlrm_scale.config import add_config_arguments, config_from_args
from dlrm_scale.train.build import build_trainer, init_distributed


def local_view(state_dict: dict) -> dict:
    replicated, shards = {}, {}
    for name, value in state_dict.items():
        if isinstance(value, ShardedTensor):
            shards[name] = {"size": list(value.size()),
                            "local": [{"offsets": list(shard.metadata.shard_offsets),
                                       "sizes": list(shard.metadata.shard_sizes)} for shard in value.local_shards()]}
        else:
            replicated[name] = value.detach().cpu().clone()
    return {"replicated": replicated, "shards": shards}


def main() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    cfg = config_from_args(parser.parse_args())
    env = init_distributed(cfg.train)
    trainer = build_trainer(cfg, env)
    trainer.fit()
    trainer.logger.close()
    torch.save(local_view(trainer.model.state_dict()), f"{cfg.train.out_dir}/final-rank{env.rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
