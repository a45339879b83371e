"""The ``contiguous`` encoding: TorchRec's ``sparse_to_contiguous`` (frequency threshold 0), streamed and parallel.

TorchRec (and the MLPerf DLRMv2 dataset built with it) numbers each column's raw values ``int(hex or "0", 16)``
from 2 in order of first appearance: file by file in input order (day_0 first), line by line. Missing is the
value 0 and is numbered like any other value. TorchRec holds every day in memory (about 700 GB for Terabyte);
here the order is recovered from per-chunk summaries:

1. **first-seen pass** (:class:`FirstSeen`, one task per chunk, any number in parallel): each column's distinct
   values with the chunk line where each first appears. Memory: the chunk's distinct values (bounded by
   ``--chunk-bytes``), folded whenever the unfolded part outgrows the folded one.
2. **merge** (:func:`merge_column`, one task per column): a value's position in the whole input is
   ``(chunk ordinal, line)``; the merge keeps each value's smallest such key (pyarrow's hash ``min``), folding the
   chunk files in batches as in pass 1, and numbers the values by ascending key. Memory: about 3 x 16 bytes per
   distinct value of that column (never the input's size).
3. **convert** looks ids up in the memory-mapped ``sorted_values.npy`` / ``sorted_ids.npy`` and takes the optional
   cap ``id % max_ind_range`` afterwards, as TorchRec's loaders do with ``% num_embeddings``. The column's
   cardinality is ``K + 2`` for K distinct values (ids 0 and 1 unused), or the cap when that is smaller.

On disk, ``OUT/contiguous/<column>/``: ``values.npy`` (value of id i + 2) and the lookup pair ``sorted_values.npy``
+ ``sorted_ids.npy``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_prep.schema import SPARSE

FIRST_ID = 2  # TorchRec keeps 1 for values under the frequency threshold, 0 unused
_LINE_BITS = 36  # key = chunk ordinal << 36 | line within the chunk (a chunk holds < 2**36 lines)
_FOLD_ENTRIES = 1 << 18  # per column: 26 columns x 2 x 2**18 x 16 bytes bound the unfolded pairs (~200 MB)


def _first_keys(values: list[np.ndarray], keys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Each distinct value with its smallest key: ``(values (K,), keys (K,))`` int64, in no particular order."""
    table = pa.table({"v": pa.array(np.concatenate(values), pa.int64()),
                      "k": pa.array(np.concatenate(keys), pa.int64())})
    folded = table.group_by("v", use_threads=False).aggregate([("k", "min")])
    return folded.column("v").to_numpy(), folded.column("k_min").to_numpy()


class _Folder:
    """Pairs ``(value, key)`` appended in pieces and folded to one pair per value when the unfolded pieces
    outgrow the folded part (so the cost stays linear and memory about twice the distinct values)."""

    def __init__(self) -> None:
        self.values: list[np.ndarray] = []
        self.keys: list[np.ndarray] = []
        self._folded = 0
        self._pending = 0

    def add(self, values: np.ndarray, keys: np.ndarray) -> None:
        if len(values) == 0:
            return
        self.values.append(values)
        self.keys.append(keys)
        self._pending += len(values)
        if self._pending > max(self._folded, _FOLD_ENTRIES):
            self.fold()

    def fold(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.values:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        if len(self.values) > 1 or self._pending:
            values, keys = _first_keys(self.values, self.keys)
            self.values, self.keys = [values], [keys]
            self._folded, self._pending = len(values), 0
        return self.values[0], self.keys[0]


class FirstSeen:
    """Per column, the distinct values of one chunk and the chunk line (0-based) where each first appears."""

    def __init__(self) -> None:
        self._columns = [_Folder() for _ in SPARSE]

    def add(self, column: int, values: np.ndarray, lines: np.ndarray) -> None:
        """``values (N,)`` raw values (missing = 0) and ``lines (N,) int64`` their lines, ascending."""
        self._columns[column].add(values.astype(np.int64), lines.astype(np.int64))

    def save(self, path: Path) -> None:
        arrays = {}
        for name, folder in zip(SPARSE, self._columns):
            values, lines = folder.fold()
            order = np.argsort(values, kind="stable")
            arrays[f"{name}_values"], arrays[f"{name}_lines"] = values[order], lines[order]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def merge_column(first_seen_files: list[Path], name: str) -> np.ndarray:
    """Column ``name``'s distinct values in id order (value of id i + 2), from the chunks' first-seen files given
    in input order."""
    folder = _Folder()
    for ordinal, path in enumerate(first_seen_files):
        with np.load(path) as arrays:
            values, lines = arrays[f"{name}_values"], arrays[f"{name}_lines"]
        if len(lines) and lines.max() >= 1 << _LINE_BITS:
            raise ValueError(f"{path}: a chunk of more than 2**{_LINE_BITS} lines")
        folder.add(values, lines + (ordinal << _LINE_BITS))
    values, keys = folder.fold()
    return values[np.argsort(keys, kind="stable")]


def _save_array(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, array)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def save_column(directory: Path, name: str, values: np.ndarray) -> None:
    """Writes ``directory/name/``: ``values.npy`` in id order and the sorted lookup pair."""
    column = directory / name
    column.mkdir(parents=True, exist_ok=True)
    order = np.argsort(values, kind="stable")
    _save_array(column / "values.npy", values.astype(np.int64))
    _save_array(column / "sorted_values.npy", values[order].astype(np.int64))
    _save_array(column / "sorted_ids.npy", (order + FIRST_ID).astype(np.int64))


def cardinality(distinct: int, max_ind_range: int) -> int:
    """Table size for ``distinct`` values: ids run to ``distinct + 1``, or wrap at the cap."""
    size = distinct + FIRST_ID
    return min(size, max_ind_range) if max_ind_range > 0 else size


class ContiguousIds:
    """Memory-mapped lookup of every column (shared across worker processes through the page cache)."""

    def __init__(self, directory: Path) -> None:
        self._sorted = [np.load(directory / name / "sorted_values.npy", mmap_mode="r") for name in SPARSE]
        self._ids = [np.load(directory / name / "sorted_ids.npy", mmap_mode="r") for name in SPARSE]

    def lookup(self, column: int, values: np.ndarray, max_ind_range: int) -> np.ndarray:
        """``values (N,)`` raw values (missing = 0) -> ``ids (N,) int64``, ``% max_ind_range`` when that is set.
        Every value was numbered by the merge; one that was not means the input changed since."""
        if len(values) == 0:
            return np.zeros(0, np.int64)
        table = self._sorted[column]
        position = np.minimum(np.searchsorted(table, values), max(len(table) - 1, 0))
        if len(table) == 0 or not np.array_equal(table[position], values):
            raise RuntimeError(f"{SPARSE[column]}: a value the first-seen pass did not see; the input changed "
                               "during the run")
        ids = np.asarray(self._ids[column][position], dtype=np.int64)
        return ids % max_ind_range if max_ind_range > 0 else ids
