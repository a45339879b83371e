"""A split of a prepared directory as a list of Parquet row groups (the loader's row source).

Opening reads every shard's footer once: it checks each file against the manifest (row and row-group counts,
column names and types) so a stale or hand-edited directory fails at start-up naming the file, not hours into a
run, and it learns the size of every row group, which the loader needs to partition rows exactly. Reading a row
group decodes only the contract's columns and converts them with :func:`arrow_to_columns`.

What is read is checked before training sees it (the checks a run can turn off, trading safety for speed):

- ``verify``: a shard's bytes must match the manifest's sha256 before any of its rows are used. Each process
  hashes a shard once, in the reader thread, on the first read of any of its row groups (the result is kept for
  the process, keyed by path, size and mtime, so later epochs and the evaluation loader pay nothing); that first
  read pulls the file into the page cache that the row-group reads then hit.
- ``check_values``: every decoded row group goes through :func:`~dlrm_scale.data.columns.check_values` (ids in
  ``[0, cardinality)``, finite dense features, labels 0/1).
- always: the ``unlabeled`` split (rows of a file without labels, label -1) can be read for scoring
  (``train=False``) but never for training.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dlrm_scale.data.arrow import SchemaError, arrow_to_columns, check_schema
from dlrm_scale.data.columns import Columns, check_values
from dlrm_scale.data.manifest import UNLABELED_SPLIT, Manifest, ManifestError, sha256_file

_OPEN_FILES_PER_THREAD = 8
_VERIFIED: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 seen by this process
_VERIFY_LOCK = threading.Lock()
_FILE_LOCKS: dict[str, threading.Lock] = {}


def forget_verified_shards() -> None:
    """Forgets which shards this process has verified (benchmarks time the first epoch's hashing with it)."""
    _VERIFIED.clear()


class ChecksumError(ManifestError):
    """A shard's bytes do not match the sha256 the manifest recorded when prep wrote it."""


def verify_shard(path: Path, expected: str) -> None:
    """Raises :class:`ChecksumError` unless ``path`` hashes to ``expected``; hashes each file version once per
    process (concurrent callers of the same file wait for one hash)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if _VERIFIED.get(key) == expected:
        return
    with _VERIFY_LOCK:
        lock = _FILE_LOCKS.setdefault(str(path), threading.Lock())
    with lock:
        if _VERIFIED.get(key) != expected:
            actual = sha256_file(path)
            if actual != expected:
                raise ChecksumError(f"{path}: sha256 {actual[:16]}... does not match the manifest's "
                                    f"{expected[:16]}...; the shard changed after prep (re-run prep, or set "
                                    f"data.verify=false to skip this check)")
            _VERIFIED[key] = expected


class ParquetSource:
    """Row groups of split ``split`` of the prepared directory ``root``, in manifest order; ``train`` says the rows
    will be trained on (the unlabeled split is refused), ``verify`` / ``check_values`` as in the module docstring."""

    def __init__(self, root: str | Path, manifest: Manifest, split: str, *, train: bool = False,
                 verify: bool = True, check_values: bool = True) -> None:
        root = Path(root)
        shards = manifest.split(split).shards
        unlabeled = split == UNLABELED_SPLIT
        if unlabeled and train:
            raise ManifestError(f"split {split!r} of {root} holds rows without labels (label -1): it can be scored "
                                f"but not trained on; set data.train_split to a labeled split "
                                f"({', '.join(sorted(s for s in manifest.splits if s != UNLABELED_SPLIT))})")
        self.verify = verify
        self._checks: dict[str, Any] | None = None
        if check_values:
            self._checks = {"cardinalities": list(manifest.cardinalities),
                            "dense_names": list(manifest.dense_columns),
                            "sparse_names": list(manifest.sparse_columns), "label_name": manifest.label_column,
                            "labels": (float(manifest.extra.get("unlabeled_label", -1)),) if unlabeled
                            else (0.0, 1.0)}
        self._sha256: list[str] = []
        self.label_column = manifest.label_column
        self.dense_columns = list(manifest.dense_columns)
        self.sparse_columns = list(manifest.sparse_columns)
        self.paths: list[Path] = []
        self._locations: list[tuple[int, int]] = []  # group -> (file index, row group in file)
        group_rows: list[int] = []
        for shard in shards:
            path = root / shard.path
            if not path.is_file():
                raise ManifestError(f"{path}: shard listed in {root / 'manifest.json'} does not exist")
            try:
                with pq.ParquetFile(path) as parquet_file:
                    schema = parquet_file.schema_arrow
                    footer = parquet_file.metadata
            except (pa.ArrowException, OSError) as exc:
                raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc
            check_schema(schema, label_column=self.label_column, dense_columns=self.dense_columns,
                         sparse_columns=self.sparse_columns, multi_hot=manifest.multi_hot, where=str(path))
            rows = [footer.row_group(i).num_rows for i in range(footer.num_row_groups)]
            if sum(rows) != shard.rows or len(rows) != shard.row_groups:
                raise ManifestError(
                    f"{path}: manifest says {shard.rows} rows in {shard.row_groups} row groups, the file has "
                    f"{sum(rows)} rows in {len(rows)}; the directory changed after prep (re-run it)"
                )
            file_index = len(self.paths)
            self.paths.append(path)
            self._sha256.append(shard.sha256)
            self._locations.extend((file_index, i) for i in range(len(rows)))
            group_rows.extend(rows)
        self.group_rows = np.array(group_rows, dtype=np.int64)
        self.description = f"split {split!r} of {root} ({len(self.paths)} shards, {int(self.group_rows.sum())} rows)"
        self.fingerprint = f"parquet:{split}:{len(self.paths)}:{int(self.group_rows.sum())}"
        self._local = threading.local()

    def _file(self, file_index: int) -> pq.ParquetFile:
        """This thread's open handle of a shard (handles are not shared between reader threads)."""
        cache = self._local.__dict__.setdefault("files", {})
        if file_index not in cache:
            if len(cache) >= _OPEN_FILES_PER_THREAD:
                cache.pop(next(iter(cache)))
            cache[file_index] = pq.ParquetFile(self.paths[file_index])
        return cache[file_index]

    def read(self, group: int) -> Columns:
        file_index, row_group = self._locations[group]
        where = f"{self.paths[file_index]} row group {row_group}"
        if self.verify:
            verify_shard(self.paths[file_index], self._sha256[file_index])
        try:
            table = self._file(file_index).read_row_group(
                row_group, columns=[self.label_column, *self.dense_columns, *self.sparse_columns])
        except (pa.ArrowException, OSError) as exc:
            raise SchemaError(f"{where}: cannot be read ({exc})") from exc
        columns = arrow_to_columns(table, label_column=self.label_column, dense_columns=self.dense_columns,
                                   sparse_columns=self.sparse_columns, where=where)
        if self._checks is not None:
            check_values(columns, where=where, **self._checks)
        return columns
