"""The training optimizer: the dense optimizer combined with the fused embedding one, and the MLPerf LR schedule.

Embedding tables sharded by TorchRec are updated inside the backward pass by fbgemm (``model.fused_optimizer``,
configured by ``optimizer.embedding``, see ``dlrm_scale.sharding.fused_optim``). Every other parameter (MLPs,
interaction, and tables the planner made ``data_parallel``) is stepped by the dense optimizer built here from
``optimizer.dense``. Both are wrapped in one TorchRec ``CombinedOptimizer``, so the loop calls ``zero_grad()`` /
``step()`` once and a checkpoint saves both through ``state_dict()`` (a ``KeyedOptimizer``: keyed by parameter
name, sharded state included).

The schedule follows the MLPerf DLRMv2 reference (``LRPolicyScheduler`` in ``torchrec_dlrm/lr_scheduler.py``):
with ``s`` the 1-based number of the optimizer step about to run, ``W = warmup_steps``, ``D = decay_start``,
``N = decay_steps`` and ``p = decay_power``::

    factor(s) = s / W                                       if s < W          (linear warmup from 0)
              = ((N - min(s - D, N - 1)) / N) ** p          if N > 0, s >= D  (polynomial decay, then held)
              = 1                                           otherwise         (constant)

and ``lr = max(base_lr * factor, 1e-7)`` while decaying, as the reference clamps. One deliberate difference: the
reference holds the last warmup value ``(W - 1) / W`` between warmup and decay whenever a decay is configured,
an off-by-one in its bookkeeping; here the constant phase is the base learning rate, as its comments intend.

The step schedule of TorchRec's DLRM example (``--change_lr --lr_change_point P --lr_after_change_point L`` in
facebookresearch/dlrm ``torchrec_dlrm/dlrm_main.py`` up to commit f83a427, whose README.MD reaches val AUC
0.8025-0.8031 on Criteo 1TB with it) is ``optimizer.change_lr_at = P`` and ``optimizer.lr_after_change = L``:
with ``T`` the run's total optimizer steps, steps ``s > C = floor(P * T)`` run every group, embedding and dense,
at the absolute rate ``L`` (it replaces the factor above). The reference sets ``g["lr"] = L`` on every group of
its ``CombinedOptimizer`` after the step whose 0-based index ``it`` satisfies ``it * B / samples > P``, which
switches two steps later than ``C``; here the switch is exactly at the fraction.

Like the reference (which schedules ``CombinedOptimizer([model.fused_optimizer, dense_optimizer])``), the
schedule scales every parameter group, embedding groups included: each keeps its own base rate and follows the
same factor. TorchRec hands a fused group's ``lr`` to fbgemm at every ``zero_grad()``/``step()``, so the fused
update of step ``s`` uses ``factor(s)`` exactly as the dense update does, provided the loop calls
``zero_grad()`` before the backward (as ``TrainPipelineSparseDist`` and ``dlrm_scale.train.steps`` do).

Example::

    optimizer, scheduler = make_dense_optimizer(dmp, cfg.optimizer.dense)
    for batch in batches:
        optimizer.zero_grad(); loss = ...; loss.backward(); optimizer.step(); scheduler.step()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter

from dlrm_scale.config import ConfigError, DenseOptimizerConfig, OptimizerConfig, TrainConfig

DENSE_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adagrad": torch.optim.Adagrad,
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}
# The reference's floor on the decayed learning rate (absolute, not relative to the base rate).
MIN_DECAYED_LR = 1e-7


def mlperf_lr_factor(step: int, *, warmup_steps: int, decay_start: int, decay_steps: int,
                     decay_power: float) -> float:
    """The schedule's multiplier for 1-based optimizer step ``step`` (formula in the module docstring)."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    if decay_steps > 0 and step >= decay_start:
        decayed = min(step - decay_start, decay_steps - 1)
        return ((decay_steps - decayed) / decay_steps) ** decay_power
    return 1.0


@dataclass(frozen=True, kw_only=True)
class MlperfSchedule:
    """``LambdaLR`` multiplier for one parameter group: ``mlperf_lr_factor`` plus the reference's absolute floor
    of ``MIN_DECAYED_LR`` during decay (expressed relative to this group's ``base_lr``). A callable object rather
    than a closure so ``LambdaLR.state_dict()`` saves it."""

    warmup_steps: int
    decay_start: int
    decay_steps: int
    decay_power: float
    base_lr: float
    change_step: int | None = None  # steps after this one run at lr_after_change (None: no step change)
    lr_after_change: float = 0.0

    def __call__(self, last_epoch: int) -> float:
        # LambdaLR counts scheduler.step() calls from 0; the reference counts the step about to run from 1
        step = last_epoch + 1
        if self.change_step is not None and step > self.change_step:
            return self.lr_after_change / self.base_lr if self.base_lr > 0 else 0.0
        factor = mlperf_lr_factor(step, warmup_steps=self.warmup_steps, decay_start=self.decay_start,
                                  decay_steps=self.decay_steps, decay_power=self.decay_power)
        decaying = self.decay_steps > 0 and step >= self.decay_start and step >= self.warmup_steps
        if decaying and self.base_lr > 0:
            return max(factor, MIN_DECAYED_LR / self.base_lr)
        return factor


def check_schedule(dense_cfg: DenseOptimizerConfig) -> None:
    """Rejects schedules the reference rejects (decay starting inside the warmup) and negative step counts."""
    for key in ("warmup_steps", "decay_start", "decay_steps"):
        if getattr(dense_cfg, key) < 0:
            raise ConfigError(f"optimizer.dense.{key} must be >= 0, got {getattr(dense_cfg, key)}")
    if dense_cfg.decay_steps > 0 and dense_cfg.decay_start < dense_cfg.warmup_steps:
        raise ConfigError(f"optimizer.dense.decay_start ({dense_cfg.decay_start}) must not come before the end of "
                          f"the warmup (optimizer.dense.warmup_steps = {dense_cfg.warmup_steps})")


def total_steps(train_cfg: TrainConfig, batches_per_epoch: int) -> int:
    """Optimizer steps of the whole run: ``train.epochs`` epochs of ``batches_per_epoch``, capped by
    ``train.max_steps`` when that is set."""
    total = train_cfg.epochs * batches_per_epoch
    return min(total, train_cfg.max_steps) if train_cfg.max_steps > 0 else total


def lr_change_step(optimizer_cfg: OptimizerConfig, run_steps: int) -> int | None:
    """The last step run at the recipe's rates before ``optimizer.lr_after_change`` takes over:
    ``floor(change_lr_at * run_steps)``; None when ``optimizer.change_lr_at`` is 0 (no step schedule)."""
    if optimizer_cfg.change_lr_at <= 0:
        return None
    if optimizer_cfg.lr_after_change < 0:
        raise ConfigError(f"optimizer.lr_after_change must be >= 0, got {optimizer_cfg.lr_after_change}")
    return int(optimizer_cfg.change_lr_at * run_steps)


def dense_optimizer_kwargs(dense_cfg: DenseOptimizerConfig) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"lr": dense_cfg.lr, "weight_decay": dense_cfg.weight_decay}
    if dense_cfg.name != "sgd":
        kwargs["eps"] = dense_cfg.eps
    return kwargs


def make_dense_optimizer(dmp_model: nn.Module, dense_cfg: DenseOptimizerConfig, *, change_step: int | None = None,
                         lr_after_change: float = 0.0,
                         ) -> tuple[CombinedOptimizer, torch.optim.lr_scheduler.LambdaLR]:
    """``(optimizer, scheduler)`` for a ``DistributedModelParallel`` model.

    ``optimizer`` is ``CombinedOptimizer([dmp_model.fused_optimizer, dense])`` where ``dense`` is a
    ``KeyedOptimizerWrapper`` of ``optimizer.dense`` over every parameter without an in-backward optimizer;
    ``scheduler`` is a ``LambdaLR`` over all its parameter groups with :class:`MlperfSchedule` (call
    ``scheduler.step()`` after each ``optimizer.step()``). ``change_step`` (see :func:`lr_change_step`) switches
    every group, fused embedding groups included, to ``lr_after_change`` after that step.
    """
    check_schedule(dense_cfg)
    dense_params = dict(in_backward_optimizer_filter(dmp_model.named_parameters()))
    if not dense_params:
        raise ValueError("the model has no parameters outside the fused embedding tables to optimise")
    optimizer_class, kwargs = DENSE_OPTIMIZERS[dense_cfg.name], dense_optimizer_kwargs(dense_cfg)
    dense = KeyedOptimizerWrapper(dense_params, lambda params: optimizer_class(params, **kwargs))
    optimizer = CombinedOptimizer([dmp_model.fused_optimizer, dense])
    schedules = [
        MlperfSchedule(warmup_steps=dense_cfg.warmup_steps, decay_start=dense_cfg.decay_start,
                       decay_steps=dense_cfg.decay_steps, decay_power=dense_cfg.decay_power, base_lr=group["lr"],
                       change_step=change_step, lr_after_change=lr_after_change)
        for group in optimizer.param_groups
    ]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=schedules)
    return optimizer, scheduler
