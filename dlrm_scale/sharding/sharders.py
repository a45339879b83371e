"""The TorchRec sharders we shard with, and what each compute device can run.

TorchRec's stock ``EmbeddingBagCollectionSharder`` offers row-wise and table-row-wise sharding only on CUDA,
although the CPU kernels (fbgemm's CPU TBE, gloo all-to-all and reduce-scatter) run them exactly: a 2-rank
row-wise run matches an unsharded one to float32 round-off (``tests/sharding/test_sharded_equivalence.py``).
:class:`CpuCapableEmbeddingBagCollectionSharder` lifts that restriction, so every sharding type can be tried and
tested on a laptop before it runs on GPUs, where the sharder behaves exactly like the stock one.

What stays GPU-only is real: fbgemm has no CPU kernel for the fused Adam update nor for UVM (host-mapped, or
cached in HBM) tables. :func:`check_device_support` refuses those on CPU with an error that names the config key,
instead of a failure deep inside fbgemm.

``sharding.qcomms_forward`` / ``qcomms_backward`` become the sharder's ``qcomm_codecs_registry`` (TorchRec's
``QCommsConfig`` through ``get_qcomm_codecs_registry``, as in TorchRec's DLRM example); see
:mod:`dlrm_scale.sharding.options` for what they do and where they run.
"""

from __future__ import annotations

import torch
from torch import nn
from torchrec.distributed.embeddingbag import EmbeddingBagCollectionSharder
from torchrec.distributed.fbgemm_qcomm_codec import CommType, QCommsConfig, get_qcomm_codecs_registry
from torchrec.distributed.types import ModuleSharder, ShardingType

from dlrm_scale.config import ConfigError, ShardingConfig
from dlrm_scale.sharding.options import check_device_options

# fbgemm's CPU TBE implements these embedding optimizers; it has no CPU Adam.
CPU_EMBEDDING_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd")
# Kernels that keep table rows in host memory mapped into (or cached in) GPU memory: CUDA only.
GPU_ONLY_KERNELS = ("fused_uvm", "fused_uvm_caching")
# Sharding types TorchRec's sharder withholds on CPU that its CPU kernels nevertheless run correctly.
_CPU_EXTRA_SHARDING_TYPES = (ShardingType.ROW_WISE.value, ShardingType.TABLE_ROW_WISE.value)


class CpuCapableEmbeddingBagCollectionSharder(EmbeddingBagCollectionSharder):
    """``EmbeddingBagCollectionSharder`` that also offers ``row_wise`` and ``table_row_wise`` on CPU.

    On CUDA it is the stock sharder: ``sharding_types("cuda")`` and every kernel list are unchanged.
    """

    def sharding_types(self, compute_device_type: str) -> list[str]:
        types = list(super().sharding_types(compute_device_type))
        if compute_device_type == "cpu":
            types += [t for t in _CPU_EXTRA_SHARDING_TYPES if t not in types]
        return types


_COMM_TYPES = {"fp32": CommType.FP32, "fp16": CommType.FP16, "bf16": CommType.BF16}


def qcomm_codecs(sharding_cfg: ShardingConfig, compute_device: str):
    """The quantized-communication codecs for ``sharding.qcomms_*`` (None when both are fp32: plain all-to-all)."""
    config = QCommsConfig(forward_precision=_COMM_TYPES[sharding_cfg.qcomms_forward],
                          backward_precision=_COMM_TYPES[sharding_cfg.qcomms_backward])
    return get_qcomm_codecs_registry(config, device=torch.device(compute_device))


def make_sharders(sharding_cfg: ShardingConfig | None = None,
                  compute_device: str = "cpu") -> list[ModuleSharder[nn.Module]]:
    """The sharders handed to the planner and to ``DistributedModelParallel`` (the same list for both), with the
    quantized communication of ``sharding_cfg`` (none without it)."""
    registry = qcomm_codecs(sharding_cfg, compute_device) if sharding_cfg is not None else None
    return [CpuCapableEmbeddingBagCollectionSharder(qcomm_codecs_registry=registry)]


def check_device_support(sharding_cfg: ShardingConfig, embedding_optimizer: str, compute_device: str) -> None:
    """Raises :class:`ConfigError` when the config asks ``compute_device`` for something fbgemm cannot run there.

    On ``cpu``: the fused ``adam`` embedding optimizer, the UVM kernels (``fused_uvm``, ``fused_uvm_caching``),
    bf16 qcomms and the prefetch pipeline are refused, naming the key to change. ``cuda`` supports everything the
    config can express.
    """
    check_device_options(sharding_cfg, compute_device)
    if compute_device != "cpu":
        return
    if embedding_optimizer not in CPU_EMBEDDING_OPTIMIZERS:
        raise ConfigError(
            f"optimizer.embedding.name = {embedding_optimizer!r} needs a CUDA device: fbgemm's CPU embedding "
            f"kernels have no fused {embedding_optimizer} update. On CPU use one of "
            f"{', '.join(CPU_EMBEDDING_OPTIMIZERS)}, or train on GPUs"
        )
    kernels = {"sharding.default_kernel": sharding_cfg.default_kernel}
    kernels.update({f"sharding.tables.{name}.compute_kernel": table.compute_kernel
                    for name, table in sharding_cfg.tables.items()})
    for key, kernel in kernels.items():
        if kernel in GPU_ONLY_KERNELS:
            raise ConfigError(
                f"{key} = {kernel!r} needs a CUDA device: UVM tables live in host memory mapped into GPU memory, "
                f"which fbgemm's CPU kernels do not implement. On CPU use 'fused' (or 'dense' for data_parallel)"
            )
