"""The model as the training loop sees it: a batch in, the loss and the per-row outputs out.

TorchRec's ``TrainPipelineSparseDist`` drives any module whose ``forward(batch)`` returns ``(loss, output)``: it
calls the forward, backpropagates ``loss`` and hands ``output`` back to the loop. This wrapper gives the DLRM that
shape and owns the loss, so the plain debugging loop and the pipeline compute exactly the same thing.

Padding rows (``batch.mask == 0``) contribute nothing. The loss is the masked sum divided by the number of row
slots B (not by the number of real rows), so every real row has the same weight 1/B whatever batch it lands in;
after DDP's gradient averaging (and TorchRec's matching division of embedding gradients by the world size) a step
on W ranks of B slots equals a single-process step on the W*B slots of the same global batch, padding included.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class StepOutput(NamedTuple):
    """What one forward returns besides the loss (all detached, shape (B,) except ``loss``)."""

    loss: torch.Tensor  # () masked sum of row losses / B
    logits: torch.Tensor  # (B,) float32
    labels: torch.Tensor  # (B,) float32 in {0, 1}
    mask: torch.Tensor  # (B,) float32, 1 = real row, 0 = padding


def masked_bce_with_logits(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of ``logits`` (B,) against ``labels`` (B,), padding rows (``mask`` 0) weighted 0,
    divided by the number of slots B. Computed in float32 even when the logits come out of bf16 autocast."""
    per_row = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")
    return (per_row * mask).mean()


class ModelWithLoss(nn.Module):
    """``forward(batch) -> (loss, StepOutput)`` around a model ``(dense (B, 13), KJT) -> logits (B,)``.

    ``bf16`` runs the model's forward under bfloat16 autocast on ``device_type`` (matmuls of the MLPs and the
    interaction; the embedding lookups are not autocast ops and stay in their own dtype); the loss is always
    float32. The device type is fixed at construction because the pipeline traces ``forward`` symbolically, where
    ``batch.dense_features.device`` is not a real device.

    Example::

        loss, out = ModelWithLoss(build_dlrm(cfg.model, sizes, device="cpu"))(batch)
        loss.backward()
        out.logits.shape  # (B,)
    """

    def __init__(self, model: nn.Module, *, bf16: bool = False, device_type: str = "cpu") -> None:
        super().__init__()
        self.model = model
        self.bf16 = bf16
        self.device_type = device_type

    def forward(self, batch) -> tuple[torch.Tensor, StepOutput]:
        with torch.autocast(device_type=self.device_type, dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(batch.dense_features, batch.sparse_features)
        logits = logits.float()
        loss = masked_bce_with_logits(logits, batch.labels, batch.mask)
        return loss, StepOutput(loss.detach(), logits.detach(), batch.labels.detach(), batch.mask.detach())
