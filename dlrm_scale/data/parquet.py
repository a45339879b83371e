"""A split of a prepared directory as a list of Parquet row groups (the loader's row source).

Opening reads every shard's footer once: it checks each file against the manifest (row and row-group counts,
column names and types) so a stale or hand-edited directory fails at start-up naming the file, not hours into a
run, and it learns the size of every row group, which the loader needs to partition rows exactly. Reading a row
group decodes only the contract's columns and converts them with :func:`arrow_to_columns`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dlrm_scale.data.arrow import SchemaError, arrow_to_columns, check_schema
from dlrm_scale.data.columns import Columns
from dlrm_scale.data.manifest import Manifest, ManifestError

_OPEN_FILES_PER_THREAD = 8


class ParquetSource:
    """Row groups of split ``split`` of the prepared directory ``root``, in manifest order."""

    def __init__(self, root: str | Path, manifest: Manifest, split: str) -> None:
        root = Path(root)
        shards = manifest.split(split).shards
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
        try:
            table = self._file(file_index).read_row_group(
                row_group, columns=[self.label_column, *self.dense_columns, *self.sparse_columns])
        except (pa.ArrowException, OSError) as exc:
            raise SchemaError(f"{where}: cannot be read ({exc})") from exc
        return arrow_to_columns(table, label_column=self.label_column, dense_columns=self.dense_columns,
                                sparse_columns=self.sparse_columns, where=where)
