"""The loss wrapper: padding rows contribute nothing, the loss is per slot, bf16 autocast keeps a float32 loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_scale.data.batch import Batch
from dlrm_scale.train.model_with_loss import ModelWithLoss, masked_bce_with_logits


def test_masked_rows_get_no_gradient_and_loss_is_per_slot() -> None:
    logits = torch.randn(6, requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    mask = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    loss = masked_bce_with_logits(logits, labels, mask)
    loss.backward()
    expected = F.binary_cross_entropy_with_logits(logits[:4], labels[:4], reduction="sum") / 6
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert torch.all(logits.grad[4:] == 0)
    assert torch.all(logits.grad[:4] != 0)


def test_two_half_batches_average_to_the_whole_batch() -> None:
    """What DDP's gradient averaging relies on: mean over ranks of per-slot losses = the global batch's."""
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(16, generator=gen), (torch.rand(16, generator=gen) < 0.5).float()
    mask = torch.ones(16)
    mask[13:] = 0  # padding only in the second half, as the loader places it
    halves = [masked_bce_with_logits(logits[s], labels[s], mask[s]) for s in (slice(0, 8), slice(8, 16))]
    assert (halves[0] + halves[1]).item() / 2 == pytest.approx(masked_bce_with_logits(logits, labels, mask).item())


class _TinyModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        return self.linear(dense).squeeze(-1)


def _batch() -> Batch:
    kjt = KeyedJaggedTensor.from_lengths_sync(keys=["C1"], values=torch.tensor([1, 2, 3, 4]),
                                              lengths=torch.ones(4, dtype=torch.int32))
    return Batch(dense_features=torch.randn(4, 3), sparse_features=kjt, labels=torch.tensor([1.0, 0.0, 1.0, 0.0]),
                 mask=torch.tensor([1.0, 1.0, 1.0, 0.0]))


@pytest.mark.parametrize("bf16", [False, True])
def test_wrapper_returns_loss_and_detached_outputs(bf16: bool) -> None:
    model = ModelWithLoss(_TinyModel(), bf16=bf16, device_type="cpu")
    batch = _batch()
    loss, out = model(batch)
    assert loss.dtype == torch.float32 and loss.requires_grad
    assert out.logits.shape == (4,) and out.logits.dtype == torch.float32 and not out.logits.requires_grad
    assert torch.equal(out.mask, batch.mask) and torch.equal(out.labels, batch.labels)
    reference = masked_bce_with_logits(out.logits, batch.labels, batch.mask)
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)
    loss.backward()
    assert model.model.linear.weight.grad is not None
