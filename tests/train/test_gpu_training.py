"""On one GPU (skipped without CUDA; ``benchmarks/gpu_check.sh`` runs them): the training path end to end over
NCCL with a world of one, with what only a GPU runs: fused Adam for the tables, UVM-cached tables with the
prefetch pipeline, bf16 quantized communication, TF32 and the fused dot kernels."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from dlrm_scale.config import load_config
from dlrm_scale.train.build import DistEnv, build_trainer, set_tf32

pytestmark = pytest.mark.gpu

TINY = ["data.source=synthetic", "data.cardinalities=[5000, 400, 30000, 70]", "data.synthetic_rows=4096",
        "train.batch_size=256", "train.max_steps=6", "train.progress=false", "train.device=cuda",
        "data.eval_split=", "train.log_every_steps=2"]


@pytest.fixture
def nccl_world_of_one():
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cuda", 0))
    finally:
        dist.destroy_process_group()
        set_tf32(False)


@pytest.mark.parametrize("overrides", [
    ["optimizer.embedding.name=adam"],
    ["sharding.default_kernel=fused_uvm_caching", "sharding.cache_load_factor=0.2",
     "sharding.prefetch_pipeline=true"],
    ["sharding.qcomms_forward=bf16", "sharding.qcomms_backward=bf16", "train.tf32=true"],
    ["train.pipeline=false", "train.bf16=true"],
], ids=["fused_adam", "uvm_cache_prefetch", "qcomms_bf16_tf32", "plain_loop_bf16"])
def test_trains_on_one_gpu(nccl_world_of_one: DistEnv, tmp_path: Path, overrides: list[str]) -> None:
    from dlrm_scale.train.steps import pipeline_class

    cfg = load_config("tiny_cpu", [*TINY, f"train.out_dir={tmp_path}", *overrides])
    set_tf32(cfg.train.tf32)
    trainer = build_trainer(cfg, nccl_world_of_one)
    assert trainer.train_loader.device == (torch.device("cpu") if cfg.train.pipeline else nccl_world_of_one.device)
    if cfg.sharding.prefetch_pipeline:
        kernels = {sharding.compute_kernel for plan in trainer.model.plan.plan.values() for sharding in plan.values()}
        assert kernels == {"fused_uvm_caching"}
        assert pipeline_class(trainer.model).__name__ == "PrefetchTrainPipelineSparseDist"
    before = {name: value.detach().clone() for name, value in trainer.model.state_dict().items()
              if isinstance(value, torch.Tensor) and "top_mlp" in name}
    summary = trainer.fit()
    trainer.logger.close()
    assert summary["steps"] == 6 and math.isfinite(summary["samples_per_s"])
    after = trainer.model.state_dict()
    assert any(not torch.equal(value, after[name]) for name, value in before.items())  # the dense part trained
