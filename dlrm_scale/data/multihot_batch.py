"""Batches of :class:`~dlrm_scale.data.multihot.FixedColumns`: KJTs with int32 values and int32 lengths.

fbgemm's embedding kernels take int32 indices and offsets, and MLPerf DLRMv2's rows carry 214 ids each, so int32
halves the bytes gathered, pinned and copied per batch against int64. Each feature's ids are gathered as whole
rows of its ``(N, size_f)`` matrix, or, for one-hot parts, as rows of its lookup table (expansion on the fly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_scale.data.batch import Batch
from dlrm_scale.data.multihot import FixedColumns, hugepage_empty


def _int32_buffer(count: int, pin: bool) -> torch.Tensor:
    """``(count,) int32`` host memory: pinned buffers come from CUDA's caching host allocator (reused); pageable
    ones on huge pages (:func:`~dlrm_scale.data.multihot.hugepage_empty`)."""
    if pin:
        return torch.empty((count,), dtype=torch.int32, pin_memory=True)
    return torch.from_numpy(hugepage_empty((count,), np.int32))


def _segments(parts: Sequence[FixedColumns], rows: np.ndarray) -> list[tuple[FixedColumns, np.ndarray, int, int]]:
    """``(part, rows within it, first output row, end output row)`` for each part that the ascending ``rows``
    touch."""
    bounds = np.cumsum([0, *(len(part) for part in parts)])
    cuts = np.searchsorted(rows, bounds)
    return [(part, rows[cuts[p]:cuts[p + 1]] - bounds[p], int(cuts[p]), int(cuts[p + 1]))
            for p, part in enumerate(parts) if cuts[p + 1] > cuts[p]]


def take_batch(parts: Sequence[FixedColumns], rows: np.ndarray, *, batch_size: int, keys: list[str],
               sizes: list[int], tables: list[np.ndarray] | None = None, pin: bool = False,
               cache: dict[str, Any] | None = None) -> Batch:
    """A batch of ``batch_size`` rows: rows ``rows`` (ascending, b <= batch_size) of ``parts`` taken as one
    sequence, then padding rows (mask 0, no ids). ``tables`` expands one-hot parts; ``cache`` (a dict the caller
    keeps) reuses the lengths tensor of full batches.

    KJT: ``values (b * sum(sizes),) int32`` feature-major (feature f's block is its ``(b, size_f)`` matrix,
    row-major), ``lengths (F * batch_size,) int32`` = ``size_f`` for real rows, 0 for padding.
    """
    rows = np.asarray(rows, dtype=np.int64)
    num_rows = len(rows)
    if num_rows > batch_size:
        raise ValueError(f"{num_rows} rows do not fit a batch of {batch_size}")
    if len(keys) != len(sizes):
        raise ValueError(f"{len(keys)} keys for {len(sizes)} sparse features")
    segments = _segments(parts, rows)
    num_dense = parts[0].dense.shape[1]
    dense = torch.empty((batch_size, num_dense), dtype=torch.float32, pin_memory=pin)
    labels = torch.empty((batch_size,), dtype=torch.float32, pin_memory=pin)
    mask = torch.zeros((batch_size,), dtype=torch.float32, pin_memory=pin)
    dense_np, labels_np = dense.numpy(), labels.numpy()
    for part, local, start, stop in segments:
        np.take(part.dense, local, axis=0, out=dense_np[start:stop], mode="clip")
        np.take(part.labels, local, out=labels_np[start:stop], mode="clip")
    dense_np[num_rows:] = 0
    labels_np[num_rows:] = 0
    mask[:num_rows] = 1

    length_per_key = [num_rows * size for size in sizes]
    values = _int32_buffer(sum(length_per_key), pin)
    values_np = values.numpy()
    cursor = 0
    for f, size in enumerate(sizes):
        block = values_np[cursor:cursor + num_rows * size].reshape(num_rows, size)
        for part, local, start, stop in segments:
            if tables is None:
                np.take(part.ids[f], local, axis=0, out=block[start:stop], mode="clip")
            else:
                np.take(tables[f], np.take(part.ids[f], local), axis=0, out=block[start:stop], mode="clip")
        cursor += num_rows * size
    lengths = None if cache is None or num_rows != batch_size else cache.get("full_lengths")
    if lengths is None:
        lengths = torch.zeros((len(sizes), batch_size), dtype=torch.int32, pin_memory=pin)
        lengths[:, :num_rows] = torch.tensor(sizes, dtype=torch.int32)[:, None]
        lengths = lengths.view(-1)
        if cache is not None and num_rows == batch_size:
            cache["full_lengths"] = lengths
    offset_per_key = np.concatenate([[0], np.cumsum(length_per_key)]).tolist()
    sparse = KeyedJaggedTensor(keys=list(keys), values=values, lengths=lengths, stride=batch_size,
                               length_per_key=length_per_key, offset_per_key=offset_per_key)
    return Batch(dense_features=dense, sparse_features=sparse, labels=labels, mask=mask)
