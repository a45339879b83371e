"""Rows on the host in the layout batches are cut from, and the cutting itself (no per-row Python).

A :class:`Columns` holds N rows decoded from a Parquet row group (or generated): dense features, labels and the
sparse ids, which are either one-hot, one id per row and feature stored feature-major ``(F, N)`` so that a
feature's slice of the KJT ``values`` is one gather, or multi-hot, one jagged :class:`Bag` per feature (values +
offsets, the layout of an Arrow list column).

:func:`take_batch` gathers the rows of one batch from one or several ``Columns`` (the pieces of a shuffle window,
never concatenated: a multi-hot window can be hundreds of MB) straight into (optionally pinned) tensors, and pads
the batch with masked rows that carry no ids, so padding never touches an embedding row or its optimizer state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from dlrm_scale.data.batch import Batch


@dataclass(kw_only=True)
class Bag:
    """One multi-hot feature over N rows: row i's ids are ``values[offsets[i]:offsets[i + 1]]``.

    ``values (nnz,) int64``; ``offsets (N + 1,) int64``, non-decreasing, and need not start at 0 (a slice keeps
    pointing into its parent's values). ``width`` is set when every row has exactly that many ids (the MLPerf
    layout: a fixed pooling factor per feature); rows are then gathered whole, as rows of an ``(N, width)`` matrix.
    """

    values: np.ndarray
    offsets: np.ndarray
    width: int | None = None

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def detect_width(cls, values: np.ndarray, offsets: np.ndarray) -> Bag:
        """A bag with ``width`` set when all its rows have the same length (one O(N) check)."""
        lengths = np.diff(offsets)
        width = int(lengths[0]) if len(lengths) and (lengths == lengths[0]).all() else None
        return cls(values=values, offsets=offsets, width=width)

    def slice(self, start: int, stop: int) -> Bag:
        return Bag(values=self.values, offsets=self.offsets[start:stop + 1], width=self.width)


@dataclass(kw_only=True)
class Columns:
    """N host rows. ``dense (N, D) float32``, ``labels (N,) float32``, and exactly one of ``ids (F, N) int64``
    (one-hot, feature-major) or ``bags`` (F multi-hot features)."""

    dense: np.ndarray
    labels: np.ndarray
    ids: np.ndarray | None = None
    bags: list[Bag] | None = None

    def __post_init__(self) -> None:
        if (self.ids is None) == (self.bags is None):
            raise ValueError("Columns needs exactly one of ids (one-hot) or bags (multi-hot)")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_sparse(self) -> int:
        return len(self.ids) if self.ids is not None else len(self.bags)

    def slice(self, start: int, stop: int) -> Columns:
        """Rows ``[start, stop)`` as views (no copy)."""
        if self.ids is not None:
            return Columns(dense=self.dense[start:stop], labels=self.labels[start:stop], ids=self.ids[:, start:stop])
        return Columns(dense=self.dense[start:stop], labels=self.labels[start:stop],
                       bags=[bag.slice(start, stop) for bag in self.bags])


def _empty(shape: tuple[int, ...], dtype: torch.dtype, pin: bool) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, pin_memory=pin)


def _gather_bag(bag: Bag, rows: np.ndarray, out: np.ndarray) -> None:
    """Writes the ids of ``rows`` (in that order) into ``out``, whose size is their total length."""
    if bag.width is not None:
        first, last = int(bag.offsets[0]), int(bag.offsets[-1])
        matrix = bag.values[first:last].reshape(-1, bag.width)
        np.take(matrix, rows, axis=0, out=out.reshape(len(rows), bag.width), mode="clip")
        return
    starts = bag.offsets[rows]
    lengths = bag.offsets[rows + 1] - starts
    out_starts = np.cumsum(lengths) - lengths
    # position of output element j = start of its row + (j - start of its row in the output)
    positions = np.repeat(starts - out_starts, lengths) + np.arange(len(out), dtype=np.int64)
    np.take(bag.values, positions, out=out, mode="clip")


def _segments(parts: Sequence[Columns], rows: np.ndarray) -> list[tuple[Columns, np.ndarray, int, int]]:
    """``(part, rows within it, first output row, end output row)`` for each part that ``rows`` touch."""
    if len(parts) == 1:
        return [(parts[0], rows, 0, len(rows))]
    if np.any(np.diff(rows) < 0):
        raise ValueError("rows must be ascending when gathered from several parts")
    bounds = np.cumsum([0, *(len(part) for part in parts)])
    cuts = np.searchsorted(rows, bounds)
    return [(part, rows[cuts[p]:cuts[p + 1]] - bounds[p], int(cuts[p]), int(cuts[p + 1]))
            for p, part in enumerate(parts) if cuts[p + 1] > cuts[p]]


def take_batch(parts: Columns | Sequence[Columns], rows: np.ndarray, *, batch_size: int, keys: list[str],
               pin: bool = False, full_lengths: torch.Tensor | None = None) -> Batch:
    """A :class:`Batch` of ``batch_size`` rows: rows ``rows`` (b <= batch_size) of ``parts`` taken as one
    sequence (ascending when there are several parts), then ``batch_size - b`` padding rows (mask 0, zero dense,
    label 0, KJT length 0).

    ``full_lengths`` is an optional cached ``(F * batch_size,)`` int32 tensor of ones, reused for full one-hot
    batches. With ``pin`` the output is written straight into page-locked memory (needs CUDA).
    """
    parts = [parts] if isinstance(parts, Columns) else list(parts)
    # Row indices come from the loader's own permutations, so they are in range; mode="clip" below lets numpy
    # gather straight into ``out`` instead of through a bounds-checked temporary.
    rows = np.asarray(rows, dtype=np.int64)
    num_rows = len(rows)
    if num_rows > batch_size:
        raise ValueError(f"{num_rows} rows do not fit a batch of {batch_size}")
    num_features = parts[0].num_sparse
    if len(keys) != num_features:
        raise ValueError(f"{len(keys)} keys for {num_features} sparse features")
    segments = _segments(parts, rows)
    multi_hot = parts[0].bags is not None

    dense = _empty((batch_size, parts[0].dense.shape[1]), torch.float32, pin)
    labels = _empty((batch_size,), torch.float32, pin)
    mask = _empty((batch_size,), torch.float32, pin)
    dense_np, labels_np = dense.numpy(), labels.numpy()
    for part, local, start, stop in segments:
        np.take(part.dense, local, axis=0, out=dense_np[start:stop], mode="clip")
        np.take(part.labels, local, out=labels_np[start:stop], mode="clip")
    dense[num_rows:] = 0
    labels[num_rows:] = 0
    mask[:num_rows] = 1
    mask[num_rows:] = 0

    if not multi_hot:
        values = _empty((num_features, num_rows), torch.int64, pin)
        values_np = values.numpy()
        for part, local, start, stop in segments:
            for feature in range(num_features):
                np.take(part.ids[feature], local, out=values_np[feature, start:stop], mode="clip")
        values = values.view(-1)
        if num_rows == batch_size and full_lengths is not None:
            lengths = full_lengths
        else:
            lengths = _empty((num_features, batch_size), torch.int32, pin)
            lengths[:, :num_rows] = 1
            lengths[:, num_rows:] = 0
            lengths = lengths.view(-1)
        length_per_key = [num_rows] * num_features
    else:
        lengths = _empty((num_features, batch_size), torch.int32, pin)
        lengths_np = lengths.numpy()
        lengths_np[:, num_rows:] = 0
        for part, local, start, stop in segments:
            for feature, bag in enumerate(part.bags):
                lengths_np[feature, start:stop] = bag.offsets[local + 1] - bag.offsets[local]
        length_per_key = lengths_np.sum(axis=1, dtype=np.int64).tolist()
        values = _empty((sum(length_per_key),), torch.int64, pin)
        values_np = values.numpy()
        cursor = 0
        for feature in range(num_features):
            for part, local, start, stop in segments:
                count = int(lengths_np[feature, start:stop].sum(dtype=np.int64))
                _gather_bag(part.bags[feature], local, values_np[cursor:cursor + count])
                cursor += count
        lengths = lengths.view(-1)
    offset_per_key = np.concatenate([[0], np.cumsum(length_per_key)]).tolist()
    sparse = KeyedJaggedTensor(
        keys=list(keys),
        values=values,
        lengths=lengths,
        stride=batch_size,
        length_per_key=length_per_key,
        offset_per_key=offset_per_key,
    )
    return Batch(dense_features=dense, sparse_features=sparse, labels=labels, mask=mask)


class DataValueError(ValueError):
    """A shard holds a value training must not see (an id outside its table, a non-finite dense feature, a label
    other than 0/1); the message names the shard, row group, column and row."""


def _first_bad_row(bad: np.ndarray) -> int:
    return int(np.flatnonzero(bad)[0])


def check_values(columns: Columns, *, cardinalities: Sequence[int], dense_names: Sequence[str],
                 sparse_names: Sequence[str], label_name: str, labels: tuple[float, ...], where: str) -> None:
    """Raises :class:`DataValueError` naming ``where`` and the column when ``columns`` holds ids outside
    ``[0, cardinalities[f])``, non-finite dense values or labels outside ``labels``.

    Cost: a min/max reduction per sparse feature, one sum over the dense block (a NaN or inf makes the sum
    non-finite; only then is the block searched) and a comparison of the labels: about 2 ms for a row group of
    131,072 one-hot rows on one core, a few % of decoding it; no per-row Python."""
    for f, name in enumerate(sparse_names):
        ids = columns.ids[f] if columns.ids is not None else columns.bags[f].values[
            columns.bags[f].offsets[0]:columns.bags[f].offsets[-1]]
        if ids.size and (ids.min() < 0 or ids.max() >= cardinalities[f]):
            bad = (ids < 0) | (ids >= cardinalities[f])
            index = _first_bad_row(bad)
            row = index if columns.ids is not None else int(np.searchsorted(
                columns.bags[f].offsets, columns.bags[f].offsets[0] + index, side="right") - 1)
            raise DataValueError(f"{where}: column {name} row {row} has id {int(ids[index])}, outside "
                                 f"[0, {cardinalities[f]}) (the manifest's cardinality); the shard does not match "
                                 f"its manifest: re-run prep (or set data.check_values=false to skip this check)")
    check_dense_and_labels(columns.dense, columns.labels, dense_names=dense_names, label_name=label_name,
                           labels=labels, where=where)


def check_dense_and_labels(dense: np.ndarray, row_labels: np.ndarray, *, dense_names: Sequence[str], label_name: str,
                           labels: tuple[float, ...], where: str) -> None:
    """The dense and label half of :func:`check_values` (``dense (N, D)``, ``row_labels (N,)``), for row sources
    that check their ids themselves (the multi-hot source)."""
    # float32 sum: a NaN/inf always makes it non-finite; finite values that overflow it only cost the search
    if dense.size and not np.isfinite(dense.sum()):
        bad_cells = ~np.isfinite(dense)
        if bad_cells.any():
            row, col = (int(i) for i in np.argwhere(bad_cells)[0])
            raise DataValueError(f"{where}: column {dense_names[col]} row {row} is {float(dense[row, col])}; dense "
                                 f"features must be finite (re-run prep, or set data.check_values=false)")
    good_labels = row_labels == labels[0]
    for value in labels[1:]:
        good_labels |= row_labels == value
    bad_labels = ~good_labels
    if bad_labels.any():
        row = _first_bad_row(bad_labels)
        allowed = " or ".join(f"{v:g}" for v in labels)
        raise DataValueError(f"{where}: column {label_name} row {row} is {float(row_labels[row]):g}, not "
                             f"{allowed} (re-run prep, or set data.check_values=false)")
