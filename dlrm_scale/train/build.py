"""Process group, device, sharded model and trainer: what ``dlrm-scale train`` and ``dlrm-scale eval`` set up.

Under torchrun (or torchx) the environment gives ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT``; launched as a plain process the run is a world of one on a free local port. CUDA ranks use NCCL
and the GPU of their ``LOCAL_RANK``; CPU ranks use gloo.

Batches reach the device by one path: with ``train.pipeline`` the loaders hand out (pinned) host batches and
TorchRec's pipeline copies them on its own stream, a batch ahead; without it the loader copies them on its side
stream (:func:`loader_device`).
"""

from __future__ import annotations

import os
import random
import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from dlrm_scale.config import Config, ConfigError, TrainConfig


@dataclass(frozen=True, kw_only=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pick_device(train_cfg: TrainConfig, local_rank: int) -> torch.device:
    if train_cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available (use 'cpu' or 'auto')")
    if train_cfg.device == "cuda" or (train_cfg.device == "auto" and torch.cuda.is_available()):
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA devices: "
                              f"launch at most one process per GPU")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def loader_device(train_cfg: TrainConfig, device: torch.device) -> torch.device:
    """Where the loaders put their batches: the CPU when TorchRec's pipeline will copy them (``train.pipeline``; a
    loader copy would leave the pipeline's copy stage a no-op, with an extra stream, event and batch in flight),
    else ``device`` (the loader's pinned, side-stream copy is then the only one)."""
    return torch.device("cpu") if train_cfg.pipeline else device


def set_tf32(enabled: bool) -> None:
    """``train.tf32``: TensorFloat-32 (10-bit mantissa products, fp32 accumulation) for fp32 matmuls and cuDNN
    convolutions on Ampere and later GPUs, or full fp32 when off. Set explicitly either way, since torch's defaults
    differ (matmuls off, cuDNN on). The fused dot kernels follow the matmul switch."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def init_distributed(train_cfg: TrainConfig) -> DistEnv:
    """Joins (or creates) the default process group, picks this rank's device and sets ``train.tf32``."""
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(train_cfg, local_rank)
    set_tf32(train_cfg.tf32)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        store, rank, world_size = next(dist.rendezvous("env://"))
        # torchrun keeps one TCPStore for all restarts of a job; a restarted process group that read the
        # previous attempt's keys would try to connect to dead peers and hang, so each attempt gets its own keys.
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                                store=dist.PrefixStore(f"dlrm_scale/attempt_{attempt}", store), rank=rank,
                                world_size=world_size)
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                   local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")), device=device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_sharded_model(cfg: Config, env: DistEnv):
    """The DLRM wrapped with its loss, built on ``meta`` and sharded by TorchRec (tables materialised on each
    rank's device, the dense part replicated with DDP). Returns the ``DistributedModelParallel``.

    The dense layers are initialised from ``train.seed`` alone (identical on every rank; DDP also broadcasts
    rank 0's copy); the table shards from ``train.seed + rank``, so two tables placed on different ranks do not
    start from the same random numbers.
    """
    from dlrm_scale.data.loader import table_sizes
    from dlrm_scale.models.dlrm import build_dlrm, compile_dense
    from dlrm_scale.sharding.planner import shard_model
    from dlrm_scale.train.model_with_loss import ModelWithLoss

    seed_everything(cfg.train.seed)
    dlrm = build_dlrm(cfg.model, table_sizes(cfg.data), num_dense=cfg.data.num_dense, device="meta")
    if cfg.train.compile:
        compile_dense(dlrm, backend=cfg.train.compile_backend)
    model = ModelWithLoss(dlrm, bf16=cfg.train.bf16, device_type=env.device.type)
    seed_everything(cfg.train.seed + env.rank)
    return shard_model(model, cfg, device=env.device)


def build_trainer(cfg: Config, env: DistEnv):
    """Everything ``dlrm-scale train`` runs: sharded model, optimizers, loaders for ``data.train_split`` and
    (unless empty) ``data.eval_split``, checkpointer, metrics sinks, debug hooks."""
    from dlrm_scale.checkpoint import Checkpointer
    from dlrm_scale.data.loader import make_loader
    from dlrm_scale.metrics import make_metrics_logger, write_line
    from dlrm_scale.train.batch_size import batch_size_note, resolve_batch_size
    from dlrm_scale.train.debug import DebugHooks
    from dlrm_scale.train.optim import lr_change_step, make_dense_optimizer, total_steps
    from dlrm_scale.train.trainer import Trainer

    cfg = resolve_batch_size(cfg, env.world_size)  # train.global_batch_size -> per-rank train.batch_size
    if env.rank == 0 and cfg.train.global_batch_size:
        write_line(batch_size_note(cfg, env.world_size))
    model = build_sharded_model(cfg, env)  # shard_model prints the plan with its memory estimate on rank 0

    def loader(split: str, batch_size: int, train: bool):
        return make_loader(cfg.data, split=split, batch_size=batch_size, rank=env.rank, world_size=env.world_size,
                           seed=cfg.train.seed, train=train, device=loader_device(cfg.train, env.device))

    eval_loader = None
    if cfg.data.eval_split:
        eval_loader = loader(cfg.data.eval_split, cfg.train.eval_batch_size or cfg.train.batch_size, False)
    train_loader = loader(cfg.data.train_split, cfg.train.batch_size, True)
    change_step = lr_change_step(cfg.optimizer, total_steps(cfg.train, len(train_loader)))
    optimizer, scheduler = make_dense_optimizer(model, cfg.optimizer.dense, change_step=change_step,
                                                lr_after_change=cfg.optimizer.lr_after_change)
    out_dir = Path(cfg.train.out_dir)
    return Trainer(
        cfg=cfg, env=env, model=model, optimizer=optimizer, scheduler=scheduler,
        train_loader=train_loader, eval_loader=eval_loader,
        checkpointer=Checkpointer(out_dir / "checkpoints", keep=cfg.train.keep_checkpoints),
        logger=make_metrics_logger(cfg.train, rank=env.rank), hooks=DebugHooks(out_dir=out_dir, rank=env.rank),
    )
