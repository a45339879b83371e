"""The per-rank batch of a run: ``train.batch_size``, or the recipe's global batch split over the ranks.

A recipe's learning rate belongs to its *global* batch (the rows one optimizer step averages over): SGD at lr 15
converges at 16,384 rows per step and stalls at 1,024. So a preset names ``train.global_batch_size`` and every
world size gets it: per-rank batch = ``global_batch_size / world_size`` (8 GPUs: 16384 / 8 = 2048 each; 1 GPU:
16384). The learning rates are left as the recipe gives them, because the global batch they were tuned for is
unchanged. A global batch the world size does not divide is refused (one line naming both numbers and the
world sizes that divide it) rather than rounded: rounding would silently train another recipe. With
``train.global_batch_size = 0`` ``train.batch_size`` is per rank, TorchRec's convention, and the global batch
grows with the world size (then scale the learning rates yourself).

Example::

    cfg = resolve_batch_size(load_config("criteo_terabyte"), world_size=8)
    cfg.train.batch_size  # 2048
"""

from __future__ import annotations

import dataclasses

from dlrm_scale.config import Config, ConfigError


def per_rank_batch_size(*, batch_size: int, global_batch_size: int, world_size: int) -> int:
    """Rows per rank per step: ``global_batch_size / world_size`` when a global batch is set, else ``batch_size``."""
    if global_batch_size <= 0:
        return batch_size
    if global_batch_size % world_size:
        divisors = [w for w in range(1, min(global_batch_size, 1024) + 1) if global_batch_size % w == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        raise ConfigError(f"train.global_batch_size = {global_batch_size} is not divisible by the world size "
                          f"{world_size}: launch a world size that divides it ({shown}), or set "
                          f"train.global_batch_size=0 and train.batch_size (per rank) and rescale the learning rates")
    return global_batch_size // world_size


def resolve_batch_size(cfg: Config, world_size: int) -> Config:
    """``cfg`` with ``train.batch_size`` set to this world size's per-rank batch (the same ``cfg`` when no global
    batch is set). Idempotent: the global batch is kept, so resolving again gives the same value."""
    per_rank = per_rank_batch_size(batch_size=cfg.train.batch_size, global_batch_size=cfg.train.global_batch_size,
                                   world_size=world_size)
    if per_rank == cfg.train.batch_size:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=per_rank))


def batch_size_note(cfg: Config, world_size: int) -> str:
    """The line a run prints when its batch comes from ``train.global_batch_size`` (an override of
    ``train.batch_size`` has no effect then, and a user should see that)."""
    return (f"batch: train.global_batch_size {cfg.train.global_batch_size} over {world_size} ranks = "
            f"{cfg.train.batch_size} rows per rank (train.batch_size applies only with train.global_batch_size=0)")
