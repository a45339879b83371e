"""Multi-hot rows with a fixed number of ids per feature (MLPerf DLRMv2), read by reshaping, batched as int32 KJTs.

A directory made by ``dlrm-scale prep multihot`` has ``manifest.extra["multihot"]`` (sizes, distribution, seed,
the lookup tables' directory) and one of two layouts:

- ``materialized``: column ``C<f>`` is ``fixed_size_binary[4 * size_f]``, row i's ``size_f`` little-endian int32
  ids. A row group's column is then an ``(N, size_f)`` int32 matrix by reshaping its data buffer (Parquet decodes
  fixed-length byte arrays without repetition levels: measured 10-30x faster than ``FixedSizeList<int32>``).
- ``expand``: the shards are the one-hot ones; a batch's ids are expanded as it is assembled, by the rows
  ``id % rows_f`` of the memory-mapped lookup table f, which is how the materialized ids were made, so both
  layouts give identical batches.

Batches are assembled by :func:`dlrm_scale.data.multihot_batch.take_batch`. This module imports no torch, so
``dlrm-scale prep multihot`` workers can share the table reader.
"""

from __future__ import annotations

import mmap
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dlrm_scale.data.manifest import UNLABELED_SPLIT, Manifest, ManifestError

_OPEN_FILES_PER_THREAD = 8


def hugepage_empty(shape: tuple[int, ...], dtype: np.dtype | str) -> np.ndarray:
    """An uninitialised array in fresh anonymous memory advised onto transparent huge pages (where the kernel
    allows them). Filling tens of MB of fresh 4 KB pages costs a fault per page (~14k for a 65536-row MLPerf
    batch, ~70% of the time to fill it); huge pages cut the faults ~500x. Small arrays come from ``np.empty``."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if nbytes < 1 << 22 or not hasattr(mmap, "MADV_HUGEPAGE"):
        return np.empty(shape, dtype)
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    memory.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(memory, dtype=dtype).reshape(shape)  # the array keeps the mapping alive


def load_tables(directory: Path, columns: list[str], rows: list[int], sizes: list[int]) -> list[np.ndarray]:
    """The memory-mapped lookup tables ``directory/<column>.npy``, ``(rows[f], sizes[f]) int32`` each."""
    tables = []
    for column, count, size in zip(columns, rows, sizes):
        path = directory / f"{column}.npy"
        if not path.is_file():
            raise ManifestError(f"{path}: lookup table missing; rerun `dlrm-scale prep multihot`")
        table = np.load(path, mmap_mode="r")
        if table.shape != (count, size) or table.dtype != np.int32:
            raise ManifestError(f"{path}: holds {table.dtype} {table.shape}, expected int32 ({count}, {size}); the "
                                "tables belong to other settings")
        tables.append(table)
    return tables


@dataclass(kw_only=True)
class FixedColumns:
    """N host rows. ``dense (N, D) float32``, ``labels (N,) float32`` and per feature ``ids[f]``: ``(N, size_f)
    int32`` (materialized) or ``(N,) int64`` one-hot ids in ``[0, rows_f)`` still to be expanded."""

    dense: np.ndarray
    labels: np.ndarray
    ids: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_sparse(self) -> int:
        return len(self.ids)

    def slice(self, start: int, stop: int) -> FixedColumns:
        return FixedColumns(dense=self.dense[start:stop], labels=self.labels[start:stop],
                            ids=[ids[start:stop] for ids in self.ids])


def check_sizes(manifest: Manifest, multi_hot_sizes: list[int]) -> None:
    """Raises :class:`ManifestError` when the config's ``data.multi_hot_sizes`` are not the data's."""
    spec = manifest.extra.get("multihot")
    if spec and multi_hot_sizes and list(multi_hot_sizes) != list(spec["sizes"]):
        raise ManifestError(f"data.multi_hot_sizes {list(multi_hot_sizes)} differ from the data's {spec['sizes']} "
                            "(set data.multi_hot_sizes=[] to take the data's)")


class MultiHotSource:
    """Row groups of one split of a ``prep multihot`` directory (see the module docstring), in manifest order."""

    def __init__(self, root: str | Path, manifest: Manifest, split: str, *, train: bool = False,
                 verify: bool = True, check_values: bool = True) -> None:
        root = Path(root)
        if split == UNLABELED_SPLIT and train:
            raise ManifestError(f"split {split!r} of {root} holds rows without labels (label -1): it can be scored "
                                f"but not trained on; set data.train_split to a labeled split")
        # the same boundary checks as ParquetSource (shard sha256 once per process; finite dense, labels 0/1);
        # ids are always checked below, as the lookup tables would otherwise be read out of bounds
        self.verify = verify
        self.check_values = check_values
        self.allowed_labels = (float(manifest.extra.get("unlabeled_label", -1)),) if split == UNLABELED_SPLIT \
            else (0.0, 1.0)
        spec = manifest.extra["multihot"]
        self.expand = spec["layout"] == "expand"
        self.sizes = [int(s) for s in spec["sizes"]]
        self.rows = list(manifest.cardinalities)
        self.id_bounds = list(spec["input_cardinalities"]) if self.expand else self.rows
        self.label_column = manifest.label_column
        self.dense_columns = list(manifest.dense_columns)
        self.sparse_columns = list(manifest.sparse_columns)
        if len(self.sizes) != len(self.sparse_columns):
            raise ManifestError(f"{root}: {len(self.sizes)} multi-hot sizes for {len(self.sparse_columns)} features")
        self.tables = load_tables(root / spec["tables"], self.sparse_columns, self.rows, self.sizes) \
            if self.expand else None
        self.paths: list[Path] = []
        self._sha256: list[str] = []
        self._locations: list[tuple[int, int]] = []
        group_rows: list[int] = []
        for shard in manifest.split(split).shards:
            path = root / shard.path
            if not path.is_file():
                raise ManifestError(f"{path}: shard listed in {root / 'manifest.json'} does not exist")
            try:
                footer = pq.read_metadata(path)
                schema = pq.read_schema(path)
            except (pa.ArrowException, OSError) as exc:
                raise ManifestError(f"{path}: not a readable Parquet file ({exc})") from exc
            self._check_schema(schema, str(path))
            rows = [footer.row_group(i).num_rows for i in range(footer.num_row_groups)]
            if sum(rows) != shard.rows or len(rows) != shard.row_groups:
                raise ManifestError(f"{path}: manifest says {shard.rows} rows in {shard.row_groups} row groups, the "
                                    f"file has {sum(rows)} rows in {len(rows)}; the directory changed after prep")
            self._locations.extend((len(self.paths), i) for i in range(len(rows)))
            self.paths.append(path)
            self._sha256.append(shard.sha256)
            group_rows.extend(rows)
        self.group_rows = np.array(group_rows, dtype=np.int64)
        self.description = (f"split {split!r} of {root} ({len(self.paths)} shards, {int(self.group_rows.sum())} rows, "
                            f"multi-hot {spec['layout']})")
        self.fingerprint = f"multihot-{spec['layout']}:{split}:{len(self.paths)}:{int(self.group_rows.sum())}"
        self._local = threading.local()
        self._lengths: dict[int, dict] = {}  # batch size -> the full batches' lengths tensor

    def _check_schema(self, schema: pa.Schema, where: str) -> None:
        problems = [f"column {name} is missing" for name in [self.label_column, *self.dense_columns,
                                                              *self.sparse_columns] if schema.get_field_index(name) < 0]
        for name, size in zip(self.sparse_columns, self.sizes):
            if schema.get_field_index(name) < 0:
                continue
            tp = schema.field(name).type
            if self.expand and not pa.types.is_integer(tp):
                problems.append(f"column {name} has type {tp}; the manifest says one-hot ids expanded by the loader")
            elif not self.expand and tp != pa.binary(4 * size):
                problems.append(f"column {name} has type {tp}; the manifest says {size} int32 ids per row "
                                f"(fixed_size_binary[{4 * size}])")
        if problems:
            raise ManifestError(f"{where}: " + "; ".join(problems))

    def _file(self, file_index: int) -> pq.ParquetFile:
        cache = self._local.__dict__.setdefault("files", {})
        if file_index not in cache:
            if len(cache) >= _OPEN_FILES_PER_THREAD:
                cache.pop(next(iter(cache)))
            cache[file_index] = pq.ParquetFile(self.paths[file_index], memory_map=True)
        return cache[file_index]

    def read(self, group: int) -> FixedColumns:
        # imported here: they import torch, which prep's table workers that share this module do not need
        from dlrm_scale.data.columns import check_dense_and_labels
        from dlrm_scale.data.parquet import verify_shard

        file_index, row_group = self._locations[group]
        where = f"{self.paths[file_index]} row group {row_group}"
        if self.verify:
            verify_shard(self.paths[file_index], self._sha256[file_index])
        try:
            table = self._file(file_index).read_row_group(
                row_group, columns=[self.label_column, *self.dense_columns, *self.sparse_columns], use_threads=False)
        except (pa.ArrowException, OSError) as exc:
            raise ManifestError(f"{where}: cannot be read ({exc})") from exc
        if any(column.null_count for column in table.columns):
            raise ManifestError(f"{where}: null values; prep writes none")
        num_rows = table.num_rows
        dense = np.empty((num_rows, len(self.dense_columns)), dtype=np.float32)
        for j, name in enumerate(self.dense_columns):
            dense[:, j] = table.column(name).to_numpy()
        labels = table.column(self.label_column).to_numpy().astype(np.float32)
        if self.check_values:
            check_dense_and_labels(dense, labels, dense_names=self.dense_columns, label_name=self.label_column,
                                   labels=self.allowed_labels, where=where)
        ids = []
        for f, name in enumerate(self.sparse_columns):
            column = table.column(name)
            array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
            if self.expand:
                values = array.to_numpy().astype(np.int64, copy=False)
            else:
                width = self.sizes[f]
                values = np.frombuffer(array.buffers()[1], dtype="<i4", count=num_rows * width,
                                       offset=array.offset * 4 * width).reshape(num_rows, width)
            if len(values) and (values.min() < 0 or values.max() >= self.id_bounds[f]):
                bad = values[(values < 0) | (values >= self.id_bounds[f])].flat[0]
                raise ManifestError(f"{where}: column {name} holds id {bad}, outside [0, {self.id_bounds[f]}) of "
                                  "the manifest")
            ids.append(values % self.rows[f] if self.expand else values)
        return FixedColumns(dense=dense, labels=labels, ids=ids)

    def empty(self) -> FixedColumns:
        return FixedColumns(dense=np.empty((0, len(self.dense_columns)), np.float32), labels=np.empty(0, np.float32),
                            ids=[np.empty(0, np.int64) if self.expand else np.empty((0, s), np.int32)
                                 for s in self.sizes])

    def take_batch(self, parts: list[FixedColumns], rows: np.ndarray, *, batch_size: int, keys: list[str],
                   pin: bool = False):
        """The loader's batch assembly for this source (:func:`dlrm_scale.data.multihot_batch.take_batch`)."""
        from dlrm_scale.data.multihot_batch import take_batch

        cache = self._lengths.setdefault(batch_size, {})
        return take_batch(parts, rows, batch_size=batch_size, keys=keys, sizes=self.sizes, tables=self.tables,
                          pin=pin, cache=cache)


def multihot_source(root: str | Path, manifest: Manifest, split: str, multi_hot_sizes: list[int], *,
                    train: bool = False, verify: bool = True, check_values: bool = True) -> MultiHotSource | None:
    """The loader's hook: a :class:`MultiHotSource` for a ``prep multihot`` directory, None for any other."""
    if "multihot" not in manifest.extra:
        return None
    if not manifest.multi_hot:
        raise ManifestError(f"{root}: manifest records multi-hot settings but says multi_hot=false")
    check_sizes(manifest, multi_hot_sizes)
    return MultiHotSource(root, manifest, split, train=train, verify=verify, check_values=check_values)
