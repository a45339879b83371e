"""Arrow tables (decoded Parquet row groups) to host :class:`~dlrm_scale.data.columns.Columns`, column at a time.

The shard layout is the manifest's: ``label`` (int8), ``I1..I13`` (float32, already transformed), ``C1..C26``
(int64 one-hot, or ``list<int64>`` multi-hot). A list column becomes a :class:`Bag` by reusing Arrow's own
offsets and flattened values, so converting costs a few column copies and no per-row Python. When any sparse
column is a list, every sparse feature is a bag (an int column is then a bag of one id per row), which is the
MLPerf DCNv2 layout: a pooling factor per feature.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dlrm_scale.data.batch import Batch
from dlrm_scale.data.columns import Bag, Columns, take_batch


class SchemaError(ValueError):
    """A shard's columns are missing, of the wrong type, or hold nulls; the message names the file and column."""


def _is_list(tp: pa.DataType) -> bool:
    return pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp)


def check_schema(schema: pa.Schema, *, label_column: str, dense_columns: list[str], sparse_columns: list[str],
                 multi_hot: bool, where: str) -> None:
    """Raises :class:`SchemaError` naming ``where`` (a file) and the column when ``schema`` breaks the contract."""
    problems = []
    for name in [label_column, *dense_columns, *sparse_columns]:
        if schema.get_field_index(name) < 0:
            problems.append(f"column {name} is missing")
    if problems:
        raise SchemaError(f"{where}: " + "; ".join(problems))
    label_type = schema.field(label_column).type
    if not (pa.types.is_integer(label_type) or pa.types.is_floating(label_type)):
        problems.append(f"column {label_column} has type {label_type}; expected int8")
    for name in dense_columns:
        tp = schema.field(name).type
        if not (pa.types.is_floating(tp) or pa.types.is_integer(tp)):
            problems.append(f"column {name} has type {tp}; expected float32")
    for name in sparse_columns:
        tp = schema.field(name).type
        if _is_list(tp):
            if not multi_hot:
                problems.append(f"column {name} has type {tp} but the manifest says one-hot (multi_hot=false)")
            elif not pa.types.is_integer(tp.value_type):
                problems.append(f"column {name} has type {tp}; expected list<int64>")
        elif not pa.types.is_integer(tp):
            problems.append(f"column {name} has type {tp}; expected {'list<int64>' if multi_hot else 'int64'}")
    if problems:
        raise SchemaError(f"{where}: " + "; ".join(problems))


def _no_nulls(column: pa.ChunkedArray | pa.Array, name: str, where: str) -> None:
    if column.null_count:
        raise SchemaError(f"{where}: column {name} has {column.null_count} null values; prep writes none")


def _bag(column: pa.ChunkedArray, name: str, where: str) -> Bag:
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    _no_nulls(array, name, where)
    if not _is_list(array.type):
        return Bag(values=array.to_numpy().astype(np.int64, copy=False),
                   offsets=np.arange(len(array) + 1, dtype=np.int64), width=1)
    if pa.types.is_fixed_size_list(array.type):
        size = array.type.list_size
        flat = array.flatten()
        offsets = np.arange(len(array) + 1, dtype=np.int64) * size
    else:
        # ``offsets`` account for a sliced array's start and index into the unsliced ``values``.
        flat = array.values
        offsets = array.offsets.to_numpy().astype(np.int64, copy=False)
    _no_nulls(flat, f"{name} (list element)", where)
    return Bag.detect_width(flat.to_numpy().astype(np.int64, copy=False), offsets)


def arrow_to_columns(table: pa.Table | pa.RecordBatch, *, label_column: str, dense_columns: list[str],
                     sparse_columns: list[str], where: str = "arrow table") -> Columns:
    """N Arrow rows -> :class:`Columns` (``dense (N, D) float32``, ``labels (N,) float32``, ids ``(F, N) int64``
    or F bags). ``where`` names the source in errors (file and row group)."""
    num_rows = table.num_rows
    dense = np.empty((num_rows, len(dense_columns)), dtype=np.float32)
    for j, name in enumerate(dense_columns):
        column = table.column(name)
        _no_nulls(column, name, where)
        dense[:, j] = column.to_numpy()
    label_column_data = table.column(label_column)
    _no_nulls(label_column_data, label_column, where)
    labels = label_column_data.to_numpy().astype(np.float32)
    sparse = [table.column(name) for name in sparse_columns]
    if any(_is_list(column.type) for column in sparse):
        bags = [_bag(column, name, where) for column, name in zip(sparse, sparse_columns)]
        return Columns(dense=dense, labels=labels, bags=bags)
    ids = np.empty((len(sparse_columns), num_rows), dtype=np.int64)
    for f, (column, name) in enumerate(zip(sparse, sparse_columns)):
        _no_nulls(column, name, where)
        ids[f] = column.to_numpy()
    return Columns(dense=dense, labels=labels, ids=ids)


def arrow_to_batch(table: pa.Table | pa.RecordBatch, *, label_column: str, dense_columns: list[str],
                   sparse_columns: list[str], keys: list[str] | None = None, batch_size: int | None = None,
                   pin: bool = False) -> Batch:
    """One Arrow record batch -> one :class:`Batch` in row order, padded to ``batch_size`` (default: N rows).
    KJT keys are ``keys`` (default: the column names)."""
    columns = arrow_to_columns(table, label_column=label_column, dense_columns=dense_columns,
                               sparse_columns=sparse_columns)
    return take_batch(columns, np.arange(len(columns)), batch_size=batch_size or len(columns),
                      keys=keys or list(sparse_columns), pin=pin)
