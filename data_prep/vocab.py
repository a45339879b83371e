"""The ``vocab`` encoding: count each column's values (streaming, per chunk), merge the counts, number the values.

Pass 1 (:class:`ValueCounter`, one per chunk task, any number in parallel) counts the non-missing values of each
categorical column, after ``% max_ind_range`` when that is set, with Arrow's hash-based ``value_counts``, folding
partial counts together whenever they grow past a bound. Each task saves ``(value, count)`` sorted by value.

The merge (:func:`merge_column`, one task per column) folds the tasks' counts one file at a time, so its memory is
the column's distinct values plus one task's, keeps the values seen at least ``min_frequency`` times and numbers
them 1..K by descending count, ties by ascending value (NVIDIA's DLRM preprocessing numbers by frequency too).
Id 0 is missing, rare or unseen; the column's cardinality is K + 1. Counts cover every input file, all splits
included, as facebookresearch/dlrm and NVIDIA's Spark scripts count all days.

On disk, ``OUT/vocab/<column>/``: ``values.npy`` (value of id i+1) and ``counts.npy`` in id order, and the lookup
form ``sorted_values.npy`` + ``sorted_ids.npy``, memory-mapped by every worker (shared in the page cache).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_prep.schema import SPARSE

_COMPACT_ENTRIES = 4_000_000


def _sum_counts(values: list[np.ndarray], counts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Adds up counts of equal values: ``(distinct values ascending, their total counts)``, both int64."""
    table = pa.table({"v": pa.array(np.concatenate(values), pa.int64()),
                      "c": pa.array(np.concatenate(counts), pa.int64())})
    summed = table.group_by("v", use_threads=False).aggregate([("c", "sum")])
    out_values = summed.column("v").to_numpy()
    out_counts = summed.column("c_sum").to_numpy()
    order = np.argsort(out_values, kind="stable")
    return out_values[order], out_counts[order]


class ValueCounter:
    """Per-column value counts of one chunk; bounded by the chunk's distinct values."""

    def __init__(self) -> None:
        self._values: list[list[np.ndarray]] = [[] for _ in SPARSE]
        self._counts: list[list[np.ndarray]] = [[] for _ in SPARSE]
        self._entries = [0] * len(SPARSE)

    def add(self, column: int, values: np.ndarray) -> None:
        """``values (N,) int64``: the present (non-missing) values of one block."""
        if len(values) == 0:
            return
        struct = pa.array(values, pa.int64()).value_counts()
        self._values[column].append(struct.field("values").to_numpy())
        self._counts[column].append(struct.field("counts").to_numpy())
        self._entries[column] += len(struct)
        if self._entries[column] > _COMPACT_ENTRIES:
            self._compact(column)

    def _compact(self, column: int) -> None:
        values, counts = _sum_counts(self._values[column], self._counts[column])
        self._values[column], self._counts[column] = [values], [counts]
        self._entries[column] = len(values)

    def save(self, path: Path) -> None:
        arrays = {}
        for column, name in enumerate(SPARSE):
            if self._values[column]:
                self._compact(column)
                values, counts = self._values[column][0], self._counts[column][0]
            else:
                values = counts = np.zeros(0, np.int64)
            arrays[f"{name}_values"] = values
            arrays[f"{name}_counts"] = counts
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def merge_column(count_files: list[Path], name: str, min_frequency: int) -> tuple[np.ndarray, np.ndarray]:
    """Folds the chunks' counts of column ``name``: ``(values (K,), counts (K,))`` in id order (id = index + 1)."""
    values = np.zeros(0, np.int64)
    counts = np.zeros(0, np.int64)
    for path in count_files:
        with np.load(path) as arrays:
            values, counts = _sum_counts([values, arrays[f"{name}_values"]], [counts, arrays[f"{name}_counts"]])
    keep = counts >= min_frequency
    values, counts = values[keep], counts[keep]
    order = np.lexsort((values, -counts))
    return values[order], counts[order]


def _save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_column(vocab_dir: Path, name: str, values: np.ndarray, counts: np.ndarray) -> None:
    directory = vocab_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    order = np.argsort(values, kind="stable")
    _save_array(directory / "values.npy", values.astype(np.int64))
    _save_array(directory / "counts.npy", counts.astype(np.int64))
    _save_array(directory / "sorted_values.npy", values[order].astype(np.int64))
    _save_array(directory / "sorted_ids.npy", (order + 1).astype(np.int64))


class Vocabulary:
    """Memory-mapped lookup tables of every categorical column."""

    def __init__(self, vocab_dir: Path) -> None:
        self._sorted = [np.load(vocab_dir / name / "sorted_values.npy", mmap_mode="r") for name in SPARSE]
        self._ids = [np.load(vocab_dir / name / "sorted_ids.npy", mmap_mode="r") for name in SPARSE]

    def sizes(self) -> list[int]:
        """Per column K + 1: the cardinality (id 0 included)."""
        return [len(values) + 1 for values in self._sorted]

    def lookup(self, column: int, values: np.ndarray, missing: np.ndarray) -> np.ndarray:
        """``values (N,)`` (after the modulo) -> ``ids (N,) int64``; 0 where missing or not in the vocabulary."""
        table = self._sorted[column]
        if len(table) == 0:
            return np.zeros(len(values), np.int64)
        position = np.minimum(np.searchsorted(table, values), len(table) - 1)
        found = (table[position] == values) & ~missing
        return np.where(found, self._ids[column][position], 0).astype(np.int64)
