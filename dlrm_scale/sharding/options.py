"""Checks of the GPU-side sharding knobs that no single field's type can express (no torchrec import: ``dlrm-scale
config`` runs them too).

- ``sharding.qcomms_forward`` / ``qcomms_backward`` (``fp32`` | ``fp16`` | ``bf16``): precision of the pooled
  embeddings' all-to-all (forward) and of their gradients' (backward), through TorchRec's ``QCommsConfig`` and
  fbgemm's codecs. Halves the bytes each rank sends; the values are rounded to 11 (fp16) or 8 (bf16) mantissa bits.
  NCCL runs both; gloo (CPU) has no bf16 codec, so bf16 is refused there rather than silently run as fp16.
- ``sharding.cache_load_factor`` (0, 1]: the fraction of a ``fused_uvm_caching`` table's rows its HBM cache holds
  (TorchRec's ``CacheParams.load_factor``; unset: TorchRec's 0.2). The planner sizes the cache with it.
- ``sharding.prefetch_pipeline``: with ``train.pipeline`` and at least one UVM-cached table in the plan, train
  with TorchRec's ``PrefetchTrainPipelineSparseDist``, which prefetches the next batch's rows into the cache while
  the current one trains (``CacheParams.prefetch_pipeline`` tells fbgemm to keep the cache consistent with it).

Errors are :class:`~dlrm_scale.config.ConfigError`, one line naming the key and the fix.
"""

from __future__ import annotations

from dlrm_scale.config import Config, ConfigError, ShardingConfig

CACHING_KERNEL = "fused_uvm_caching"


def caching_possible(sharding_cfg: ShardingConfig) -> bool:
    """Whether any table may end up UVM-cached: some table's kernel is ``fused_uvm_caching`` or left to the
    planner (which picks it for tables that do not fit in HBM)."""
    kernels = [table.compute_kernel or sharding_cfg.default_kernel for table in sharding_cfg.tables.values()]
    return sharding_cfg.default_kernel in (None, CACHING_KERNEL) or CACHING_KERNEL in kernels


def check_options(cfg: Config) -> None:
    """Raises :class:`ConfigError` for combinations of the caching / prefetch knobs that cannot take effect."""
    sharding = cfg.sharding
    if sharding.prefetch_pipeline and not cfg.train.pipeline:
        raise ConfigError("sharding.prefetch_pipeline = true needs train.pipeline = true: the cache prefetch is a "
                          "stage of TorchRec's training pipeline")
    for key, value in (("sharding.cache_load_factor", sharding.cache_load_factor),
                       ("sharding.prefetch_pipeline", sharding.prefetch_pipeline or None)):
        if value is not None and not caching_possible(sharding):
            raise ConfigError(f"{key} = {str(value).lower()} only applies to {CACHING_KERNEL!r} tables, but "
                              f"sharding.default_kernel = {sharding.default_kernel!r} rules them out: unset it, set "
                              f"it or a table's compute_kernel to {CACHING_KERNEL!r}, or drop {key}")


def check_device_options(sharding_cfg: ShardingConfig, compute_device: str) -> None:
    """The knobs' device requirements: on ``cpu`` (gloo) no bf16 qcomms and no prefetch pipeline (UVM caching,
    which it feeds, is CUDA-only)."""
    if compute_device != "cpu":
        return
    for key, precision in (("sharding.qcomms_forward", sharding_cfg.qcomms_forward),
                           ("sharding.qcomms_backward", sharding_cfg.qcomms_backward)):
        if precision == "bf16":
            raise ConfigError(f"{key} = 'bf16' needs CUDA (NCCL): gloo has no bf16 codec. On CPU use 'fp16' or "
                              f"'fp32'")
    if sharding_cfg.prefetch_pipeline:
        raise ConfigError(f"sharding.prefetch_pipeline = true needs CUDA: it prefetches into the HBM cache of "
                          f"{CACHING_KERNEL!r} tables, which fbgemm's CPU kernels do not implement. On CPU set it "
                          f"to false")
