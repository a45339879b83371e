"""The training batch: TorchRec's ``Batch`` plus a mask of real rows.

Every rank must run the same number of steps with equally sized batches, because the sharded embedding forward
is a collective: a rank that stops early hangs the others. When the data does not divide evenly, the loader fills
the last batches with padding rows, and ``mask`` tells the loss and the metrics which rows are real.

Example (B = 3, F = 2, the last row is padding)::

    batch.dense_features  # (B, 13) float32
    batch.sparse_features  # KJT keys ["C1", "C2"], lengths [1, 1, 0, 1, 1, 0] (int32), values (4,) int64
    batch.labels  # (B,) float32, e.g. [1., 0., 0.]
    batch.mask  # (B,) float32, [1., 1., 0.]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.datasets.utils import Batch as TorchRecBatch


@dataclass(kw_only=True)
class Batch(TorchRecBatch):
    """``dense_features (B, D) float32``, ``sparse_features`` KJT (keys C1..CF, lengths int32, values int64),
    ``labels (B,) float32`` and ``mask (B,) float32`` (1 = real row, 0 = padding: zero dense, label 0, no ids)."""

    mask: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(
            dense_features=self.dense_features.to(device=device, non_blocking=non_blocking),
            sparse_features=self.sparse_features.to(device=torch.device(device), non_blocking=non_blocking),
            labels=self.labels.to(device=device, non_blocking=non_blocking),
            mask=self.mask.to(device=device, non_blocking=non_blocking),
        )

    def record_stream(self, stream: torch.Stream) -> None:
        super().record_stream(stream)
        self.mask.record_stream(stream)

    def pin_memory(self) -> Batch:
        return Batch(
            dense_features=self.dense_features.pin_memory(),
            sparse_features=self.sparse_features.pin_memory(),
            labels=self.labels.pin_memory(),
            mask=self.mask.pin_memory(),
        )

    @property
    def num_real_rows(self) -> int:
        """Rows that are data, not padding (a host sync when the mask is on a device)."""
        return int(self.mask.sum().item())
