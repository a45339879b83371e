"""What ``build.py`` decides for the GPU: one host-to-device copy path (TorchRec's pipeline copies host batches;
the loader copies only without it), checked on CPU with the real pipeline; and ``train.tf32``."""

from __future__ import annotations

import itertools
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from dlrm_scale.config import load_config
from dlrm_scale.data.batch import Batch
from dlrm_scale.train.build import DistEnv, build_trainer, loader_device, set_tf32


@pytest.mark.parametrize(("pipeline", "expected"), [(True, "cpu"), (False, "cuda:1")])
def test_loaders_copy_only_when_no_pipeline_will(pipeline: bool, expected: str) -> None:
    cfg = load_config("tiny_cpu", [f"train.pipeline={str(pipeline).lower()}"])
    assert loader_device(cfg.train, torch.device("cuda", 1)) == torch.device(expected)


def test_tf32_sets_both_switches() -> None:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        set_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture
def world_of_one():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("pipelined", [True, False])
def test_each_batch_is_copied_once_by_one_party(world_of_one: DistEnv, tmp_path: Path, monkeypatch,
                                                pipelined: bool) -> None:
    """Every batch reaches ``BatchRunner.run`` once and is copied once: by TorchRec's pipeline (its copy stage) when
    pipelined, else by the plain loop (a no-op after the loader's own copy on GPUs)."""
    cfg = load_config("tiny_cpu", ["data.source=synthetic", "data.cardinalities=[50, 40, 30]", "data.synthetic_rows=256",
                                   "train.batch_size=32", f"train.pipeline={str(pipelined).lower()}",
                                   "train.progress=false", f"train.out_dir={tmp_path}", "data.eval_split="])
    trainer = build_trainer(cfg, world_of_one)
    assert trainer.train_loader.device == (torch.device("cpu") if pipelined else world_of_one.device)
    copiers = []
    original = Batch.to

    def spy(self, *args, **kwargs):
        caller = traceback.extract_stack(limit=2)[0]  # the frame that called Batch.to
        copiers.append("torchrec" if "torchrec" in caller.filename else Path(caller.filename).name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Batch, "to", spy)
    trainer.train_loader.set_epoch(0)
    outputs = list(trainer.runner.run(itertools.islice(iter(trainer.train_loader), 3)))
    assert len(outputs) == 3
    assert copiers == ["torchrec" if pipelined else "steps.py"] * 3
    trainer.logger.close()
