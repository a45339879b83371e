"""Run under torchrun (2 ranks, gloo) by ``test_options.py``: the same table-wise sharded embedding lookup and one
fused-SGD step, once with ``sharding.qcomms_* = fp32`` and once with ``fp16``; writes rank 0's pooled outputs and
table updates to the JSON file named on the command line.

Table-wise with two tables puts one table on each rank, so every rank's pooled embeddings and their gradients
cross the all-to-all, whose codec is the one under test.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch import nn
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor

from dlrm_scale.config import load_config
from dlrm_scale.sharding.planner import shard_model

CARDINALITIES = [40, 30]


class PooledLookup(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.ebc = EmbeddingBagCollection(
            tables=[EmbeddingBagConfig(name=f"t_C{i + 1}", embedding_dim=8, num_embeddings=rows,
                                       feature_names=[f"C{i + 1}"]) for i, rows in enumerate(CARDINALITIES)],
            device=torch.device("meta"))

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        return self.ebc(features).values()  # (B, 2 * 8)


def run(precision: str, rank: int) -> dict:
    cfg = load_config(None, [
        f"data.cardinalities={CARDINALITIES}", "model.embedding_dim=8", "model.bottom_mlp=[8]", "model.top_mlp=[1]",
        "train.batch_size=3", "sharding.default_type=table_wise", "optimizer.embedding.name=sgd",
        "optimizer.embedding.lr=1.0", f"sharding.qcomms_forward={precision}", f"sharding.qcomms_backward={precision}"])
    torch.manual_seed(0)  # the same tables in both runs
    dmp = shard_model(PooledLookup(), cfg, device=torch.device("cpu"))
    before = {name: tensor.local_shards()[0].tensor.clone() for name, tensor in dmp.state_dict().items()
              if hasattr(tensor, "local_shards") and tensor.local_shards()}
    generator = torch.Generator().manual_seed(100 + rank)
    features = KeyedJaggedTensor.from_lengths_sync(
        keys=["C1", "C2"], values=torch.randint(0, 30, (6,), generator=generator),
        lengths=torch.tensor([1, 2, 1, 1, 0, 1]))
    pooled = dmp(features)
    upstream = torch.randn(pooled.shape, generator=generator)
    pooled.backward(upstream)  # the fused SGD step runs inside the backward
    after = {name: tensor.local_shards()[0].tensor for name, tensor in dmp.state_dict().items() if name in before}
    return {"pooled": pooled.detach().tolist(), "upstream": upstream.tolist(),
            "updates": {name: (after[name] - before[name]).tolist() for name in sorted(before)}}


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    results = {precision: run(precision, rank) for precision in ("fp32", "fp16")}
    if rank == 0:
        with open(out_path, "w") as out:
            json.dump(results, out)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
