"""Worker for ``test_sharded_equivalence.py``; run as ``torchrun --nproc_per_node=2 _sharded_worker.py OUT.json``.

For each sharding type it trains the same small DLRM twice on the same global batches:

- reference: one unsharded model in this process, plain ``torch.optim.SGD`` over the whole global batch of
  2 x B rows, embedding and dense parameter groups with their own rates and the MLPerf schedule;
- sharded: ``shard_model`` (TorchRec planner constrained to that sharding type, fused SGD in the backward) and
  ``make_dense_optimizer``, each rank on its own B rows.

The sharded model is built from a different seed on each rank, so that the dense parameters only agree if DDP
broadcast them; it then receives the reference's initial weights shard by shard. Rank 0 writes per-type results
(per-step global losses of both runs, largest weight difference after training, how far training moved the
reference's tables, whether DDP synchronised the dense parameters, the plan) to OUT.json.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed._shard.sharded_tensor import ShardedTensor
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_scale.config import load_config, sparse_feature_names
from dlrm_scale.models.dlrm import build_dlrm
from dlrm_scale.sharding.planner import shard_model
from dlrm_scale.train.optim import mlperf_lr_factor

CARDINALITIES = [40, 30, 50, 20]
BATCH_PER_RANK = 8
STEPS = 5
EMBEDDING_LR = 0.3
DENSE_LR = 0.1
SCHEDULE = {"warmup_steps": 2, "decay_start": 3, "decay_steps": 3, "decay_power": 2.0}
SHARDING_TYPES = ["table_wise", "row_wise", "column_wise", "table_row_wise", "table_column_wise", "data_parallel"]
KEYS = sparse_feature_names(len(CARDINALITIES))


def config(sharding_type: str):
    return load_config(None, [
        f"data.cardinalities={CARDINALITIES}", "model.embedding_dim=8", "model.bottom_mlp=[16, 8]",
        "model.top_mlp=[16, 1]", f"sharding.default_type={sharding_type}", "sharding.min_partition=4",
        "optimizer.embedding.name=sgd", f"optimizer.embedding.lr={EMBEDDING_LR}",
        "optimizer.dense.name=sgd", f"optimizer.dense.lr={DENSE_LR}",
        *[f"optimizer.dense.{key}={value}" for key, value in SCHEDULE.items()],
        f"train.batch_size={BATCH_PER_RANK}",
    ])


def global_batch(step: int, rows: int):
    """Dense (rows, 13), labels (rows,), per-feature lengths (F, rows) in 0..3 (empty bags included), ids."""
    gen = torch.Generator().manual_seed(1000 + step)
    dense = torch.rand(rows, 13, generator=gen)
    labels = torch.randint(0, 2, (rows,), generator=gen).float()
    lengths = torch.randint(0, 4, (len(CARDINALITIES), rows), generator=gen)
    ids = [torch.randint(0, card, (int(lengths[f].sum()),), generator=gen) for f, card in enumerate(CARDINALITIES)]
    return dense, labels, lengths, ids


def kjt_rows(lengths: torch.Tensor, ids: list[torch.Tensor], start: int, stop: int) -> KeyedJaggedTensor:
    values, lens = [], []
    for f in range(len(KEYS)):
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths[f].cumsum(0)])
        values.append(ids[f][offsets[start]:offsets[stop]])
        lens.append(lengths[f][start:stop])
    return KeyedJaggedTensor.from_lengths_sync(keys=KEYS, values=torch.cat(values), lengths=torch.cat(lens))


def copy_full_state(dmp: torch.nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Writes the unsharded ``full`` state into the sharded model (each rank its local shards)."""
    with torch.no_grad():
        for key, value in dmp.state_dict().items():
            if isinstance(value, ShardedTensor):
                for shard in value.local_shards():
                    (r, c), (rows, cols) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                    shard.tensor.copy_(full[key][r:r + rows, c:c + cols])
            else:
                value.copy_(full[key])


def max_weight_diff(dmp: torch.nn.Module, full: dict[str, torch.Tensor]) -> float:
    worst = 0.0
    for key, value in dmp.state_dict().items():
        if isinstance(value, ShardedTensor):
            for shard in value.local_shards():
                (r, c), (rows, cols) = shard.metadata.shard_offsets, shard.metadata.shard_sizes
                worst = max(worst, (shard.tensor - full[key][r:r + rows, c:c + cols]).abs().max().item())
        else:
            worst = max(worst, (value - full[key]).abs().max().item())
    return worst


def _same_on_all_ranks(model: torch.nn.Module, world_size: int) -> bool:
    """Whether the dense (non-embedding) parameters are bitwise the same on every rank."""
    dense = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if "sparse_arch" not in n])
    gathered = [torch.zeros_like(dense) for _ in range(world_size)]
    dist.all_gather(gathered, dense)
    return all(torch.equal(gathered[0], g) for g in gathered)


def reference_run(sharding_type: str, initial: dict[str, torch.Tensor], world_size: int):
    cfg = config(sharding_type)
    model = build_dlrm(cfg.model, CARDINALITIES, device="cpu")
    model.load_state_dict(initial)
    tables = [p for n, p in model.named_parameters() if n.startswith("sparse_arch.")]
    dense = [p for n, p in model.named_parameters() if not n.startswith("sparse_arch.")]
    # data_parallel tables are replicated parameters: the dense optimizer steps them
    table_lr = DENSE_LR if sharding_type == "data_parallel" else EMBEDDING_LR
    optimizer = torch.optim.SGD([{"params": tables, "lr": table_lr}, {"params": dense, "lr": DENSE_LR}])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: mlperf_lr_factor(epoch + 1, **SCHEDULE))
    losses = []
    for step in range(STEPS):
        dense_x, labels, lengths, ids = global_batch(step, BATCH_PER_RANK * world_size)
        optimizer.zero_grad()
        logits = model(dense_x, kjt_rows(lengths, ids, 0, BATCH_PER_RANK * world_size))
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses, model.state_dict()


def sharded_run(sharding_type: str, initial: dict[str, torch.Tensor], rank: int, world_size: int):
    from dlrm_scale.train.optim import make_dense_optimizer

    cfg = config(sharding_type)
    torch.manual_seed(100 + rank)  # different dense init per rank: only DDP's broadcast can make them agree
    model = build_dlrm(cfg.model, CARDINALITIES, device="meta")
    differed = not _same_on_all_ranks(model, world_size)
    dmp = shard_model(model, cfg, device=torch.device("cpu"))
    dense_synced = differed and _same_on_all_ranks(dmp, world_size)
    copy_full_state(dmp, initial)
    optimizer, scheduler = make_dense_optimizer(dmp, cfg.optimizer.dense)
    losses = []
    start, stop = rank * BATCH_PER_RANK, (rank + 1) * BATCH_PER_RANK
    for step in range(STEPS):
        dense_x, labels, lengths, ids = global_batch(step, BATCH_PER_RANK * world_size)
        optimizer.zero_grad()
        logits = dmp(dense_x[start:stop], kjt_rows(lengths, ids, start, stop))
        loss = F.binary_cross_entropy_with_logits(logits, labels[start:stop])
        loss.backward()
        optimizer.step()
        scheduler.step()
        global_loss = loss.detach().clone()
        dist.all_reduce(global_loss)
        losses.append(global_loss.item() / world_size)
    plan = {table: {"sharding_type": ps.sharding_type, "ranks": sorted(set(ps.ranks or [])),
                    "shards": len(ps.sharding_spec.shards) if ps.sharding_spec is not None else 0}
            for module_plan in dmp.plan.plan.values() for table, ps in module_plan.items()}
    return losses, dmp, plan, dense_synced


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    results = {}
    for sharding_type in SHARDING_TYPES:
        torch.manual_seed(0)
        initial = build_dlrm(config(sharding_type).model, CARDINALITIES, device="cpu").state_dict()
        ref_losses, ref_final = reference_run(sharding_type, initial, world_size)
        losses, dmp, plan, dense_synced = sharded_run(sharding_type, initial, rank, world_size)
        weight_diff = torch.tensor(max_weight_diff(dmp, ref_final))
        dist.all_reduce(weight_diff, op=dist.ReduceOp.MAX)
        table_update = max((ref_final[k] - initial[k]).abs().max().item() for k in initial if "sparse_arch" in k)
        results[sharding_type] = {"losses": losses, "reference_losses": ref_losses, "plan": plan,
                                  "max_weight_diff": weight_diff.item(), "max_table_update": table_update,
                                  "dense_synced_by_ddp": dense_synced}
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(results, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
