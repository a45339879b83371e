"""Batch keeps its mask through the moves TorchRec's pipelines make (to, pin_memory, record_stream)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchrec.datasets.utils import Batch as TorchRecBatch

from dlrm_scale.data.batch import Batch
from dlrm_scale.data.columns import Columns, take_batch


def _batch() -> Batch:
    rng = np.random.default_rng(0)
    columns = Columns(dense=rng.normal(size=(5, 13)).astype(np.float32), labels=np.ones(5, np.float32),
                      ids=rng.integers(0, 100, (3, 5)))
    return take_batch(columns, np.array([4, 0, 2]), batch_size=4, keys=["C1", "C2", "C3"])


def test_is_a_torchrec_batch_with_a_mask() -> None:
    batch = _batch()
    assert isinstance(batch, TorchRecBatch)
    assert batch.mask.tolist() == [1, 1, 1, 0] and batch.num_real_rows == 3
    moved = batch.to(torch.device("cpu"), non_blocking=True)
    assert isinstance(moved, Batch)
    assert torch.equal(moved.mask, batch.mask)
    assert torch.equal(moved.sparse_features.values(), batch.sparse_features.values())
    assert moved.sparse_features.length_per_key() == [3, 3, 3]


@pytest.mark.gpu
def test_pin_to_cuda_and_record_stream() -> None:
    pinned = _batch().pin_memory()
    assert pinned.mask.is_pinned() and pinned.dense_features.is_pinned()
    assert pinned.sparse_features.values().is_pinned()
    on_gpu = pinned.to(torch.device("cuda"), non_blocking=True)
    on_gpu.record_stream(torch.cuda.current_stream())
    assert on_gpu.mask.is_cuda and on_gpu.mask.cpu().tolist() == [1, 1, 1, 0]
