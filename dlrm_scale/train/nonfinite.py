"""Training never continues into garbage: the ``train.on_nonfinite`` guard.

``"stop"`` (the default): a step whose loss or dense gradient norm is NaN/inf stops the run with one line naming
the step, before any evaluation or checkpoint of the poisoned model. The check costs no host synchronisation per
step: each step folds ``isfinite`` of its loss and gradient norm into a device-side "first bad step" tensor, and
the ranks compare it (one scalar ``all_reduce``) only where the loop already synchronises -- every
``log_every_steps`` and before every evaluation and checkpoint. The steps between the bad one and the check still
run (their result is thrown away with the run), so the gradient norm of the dense parameters (MLPs, interaction,
data-parallel tables: a few MB) is the only per-step cost.

``"skip_batch"``: the optimizer step of a batch whose dense gradient norm is not finite is skipped (the batch
still counts as a step, so data position and schedule stay aligned); skipped batches are counted, logged and
summarised. Limits: deciding before the step needs the norm on the host, one synchronisation per step (it stalls
the GPU pipeline a little); and the fused embedding optimizer updates the rows a batch touched *inside the
backward pass*, before any guard can look, so a non-finite gradient that reaches the embedding tables has already
written those rows. More than ``MAX_CONSECUTIVE_SKIPS`` skips in a row, or a non-finite loss whose gradients were
finite, stops the run as in ``"stop"``.

The dense gradients are DDP-averaged, so every rank sees the same norm and takes the same decision; losses are
per rank, which is why the stop decision is all-reduced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

MAX_CONSECUTIVE_SKIPS = 10
_NONE = torch.iinfo(torch.int64).max


class NonFiniteError(ValueError):
    """The run produced a non-finite loss or gradient; the message names the step."""


class GuardedOptimizer:
    """The optimizer the batch runner steps: measures the dense gradient norm before each ``step()`` and, when
    ``skip`` is set, skips a step whose norm is not finite. Everything else is the wrapped optimizer's."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, skip: bool) -> None:
        self.optimizer = optimizer
        self.skip = skip
        # plain parameters: the fused tables (ShardedTensors) get no .grad, their update happens in backward
        self._params = [p for p in getattr(optimizer, "params", {}).values()
                        if isinstance(p, torch.nn.Parameter) and not hasattr(p, "local_shards")]
        self.grad_finite: torch.Tensor | None = None  # () bool, of the last step
        self.skipped_last = False

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> None:
        grads = [p.grad.detach() for p in self._params if p.grad is not None]
        if grads:
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            self.grad_finite = torch.isfinite(norm)
        else:
            self.grad_finite = None
        self.skipped_last = self.skip and self.grad_finite is not None and not bool(self.grad_finite)
        if not self.skipped_last:
            self.optimizer.step()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.optimizer, name)


class NonFiniteGuard:
    """Called by the trainer after each step (:meth:`after_step`) and at its synchronisation points
    (:meth:`check`); raises :class:`NonFiniteError` on every rank alike."""

    def __init__(self, optimizer: GuardedOptimizer, *, device: torch.device, group: Any = None,
                 learning_rates: str = "") -> None:
        self.optimizer = optimizer
        # named in the error, as the likeliest cause of a run that went non-finite
        self.lower = f"lower the learning rates ({learning_rates})" if learning_rates else "lower the learning rate"
        self.group = group
        self.first_bad = torch.full((), _NONE, dtype=torch.int64, device=device)
        self.skipped = 0
        self._consecutive = 0

    def after_step(self, step: int, loss: torch.Tensor) -> bool:
        """Records step ``step``; returns False when its batch was skipped (leave it out of the loss average)."""
        if self.optimizer.skipped_last:
            self.skipped += 1
            self._consecutive += 1
            if self._consecutive > MAX_CONSECUTIVE_SKIPS:
                raise NonFiniteError(f"step {step}: {self._consecutive} batches in a row had a non-finite dense "
                                     f"gradient norm under train.on_nonfinite=skip_batch; the model has diverged "
                                     f"({self.lower}, or check the data)")
            return False
        self._consecutive = 0
        bad = ~torch.isfinite(loss.detach())
        if self.optimizer.grad_finite is not None:
            bad = bad | ~self.optimizer.grad_finite
        self.first_bad = torch.minimum(self.first_bad, torch.where(bad, step, _NONE))
        return True

    def check(self, newest_checkpoint: Callable[[], Any] = lambda: None) -> None:
        """Raises when any rank saw a non-finite step since the start (naming ``newest_checkpoint()``, which
        survives). One scalar all-reduce."""
        first = self.first_bad.clone()
        if dist.is_initialized():
            dist.all_reduce(first, op=dist.ReduceOp.MIN, group=self.group)
        step = int(first.item())
        if step != _NONE:
            raise NonFiniteError(
                f"step {step}: the loss or the dense gradient norm is not finite (NaN/inf); stopped before "
                f"writing a checkpoint (newest: {newest_checkpoint() or 'none'}). Likely causes: {self.lower}, check "
                f"the data, or set train.on_nonfinite=skip_batch")
