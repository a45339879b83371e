"""Arrow -> Batch conversion equals a per-row Python reference, for one-hot and every list layout."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from dlrm_scale.data.arrow import SchemaError, arrow_to_batch, arrow_to_columns, check_schema
from dlrm_scale.data.columns import take_batch

DENSE = ["I1", "I2", "I3"]
SPARSE = ["C1", "C2", "C3"]


def _random_table(rng: np.random.Generator, rows: int, list_type: str | None) -> pa.Table:
    data = {"label": pa.array(rng.integers(0, 2, rows).astype(np.int8))}
    for name in DENSE:
        data[name] = pa.array(rng.normal(size=rows).astype(np.float32))
    for name in SPARSE:
        if list_type is None:
            data[name] = pa.array(rng.integers(0, 10**12, rows), type=pa.int64())
        elif list_type in ("fixed", "uniform"):  # every row 3 ids: gathered as rows of a matrix
            data[name] = pa.array([rng.integers(0, 10**12, 3).tolist() for _ in range(rows)],
                                  type=pa.list_(pa.int64(), 3 if list_type == "fixed" else -1))
        else:
            values = [rng.integers(0, 10**12, rng.integers(0, 5)).tolist() for _ in range(rows)]
            data[name] = pa.array(values, type=pa.large_list(pa.int64()) if list_type == "large" else pa.list_(pa.int64()))
    return pa.table(data)


def _reference(table: pa.Table, batch_size: int) -> dict[str, list]:
    """Row by row in plain Python: the layout TorchRec's KJT documents (feature-major, lengths per row)."""
    rows = table.to_pylist()
    pad = batch_size - len(rows)
    lengths, values = [], []
    for name in SPARSE:
        for row in rows:
            ids = row[name] if isinstance(row[name], list) else [row[name]]
            lengths.append(len(ids))
            values.extend(ids)
        lengths.extend([0] * pad)
    return {
        "dense": [[row[name] for name in DENSE] for row in rows] + [[0.0] * len(DENSE)] * pad,
        "labels": [float(row["label"]) for row in rows] + [0.0] * pad,
        "mask": [1.0] * len(rows) + [0.0] * pad,
        "lengths": lengths,
        "values": values,
    }


def _as_lists(batch) -> dict[str, list]:
    return {
        "dense": batch.dense_features.tolist(),
        "labels": batch.labels.tolist(),
        "mask": batch.mask.tolist(),
        "lengths": batch.sparse_features.lengths().tolist(),
        "values": batch.sparse_features.values().tolist(),
    }


@pytest.mark.parametrize("list_type", [None, "list", "large", "fixed", "uniform"])
@pytest.mark.parametrize("sliced", [False, True])
def test_conversion_matches_row_by_row_reference(list_type: str | None, sliced: bool) -> None:
    rng = np.random.default_rng(0)
    table = _random_table(rng, 40, list_type)
    if sliced:  # a slice's list offsets point into the unsliced values
        table = table.slice(7, 25)
    for batch_size in (len(table), len(table) + 6):
        batch = arrow_to_batch(table, label_column="label", dense_columns=DENSE, sparse_columns=SPARSE,
                               batch_size=batch_size)
        assert _as_lists(batch) == _reference(table, batch_size)
        assert batch.dense_features.dtype == batch.labels.dtype == batch.mask.dtype == torch.float32
        assert batch.sparse_features.values().dtype == torch.int64
        assert batch.sparse_features.lengths().dtype == torch.int32
        assert batch.sparse_features.keys() == SPARSE and batch.sparse_features.stride() == batch_size
        lengths = batch.sparse_features.lengths().view(len(SPARSE), batch_size).sum(1).tolist()
        assert batch.sparse_features.length_per_key() == lengths


def test_take_batch_gathers_across_parts() -> None:
    rng = np.random.default_rng(1)
    for list_type in (None, "list", "uniform"):
        table = _random_table(rng, 30, list_type)
        kwargs = dict(label_column="label", dense_columns=DENSE, sparse_columns=SPARSE)
        parts = [arrow_to_columns(table.slice(0, 12), **kwargs).slice(2, 12),
                 arrow_to_columns(table.slice(12, 18), **kwargs)]
        if list_type == "uniform":
            assert [bag.width for part in parts for bag in part.bags] == [3] * 6
        rows = np.sort(rng.permutation(28)[:20])
        batch = take_batch(parts, rows, batch_size=24, keys=SPARSE)
        assert _as_lists(batch) == _reference(table.slice(2, 28).take(pa.array(rows)), 24)
        shuffled = rng.permutation(10)
        single = take_batch(parts[0], shuffled, batch_size=10, keys=SPARSE)
        assert _as_lists(single) == _reference(table.slice(2, 10).take(pa.array(shuffled)), 10)
        with pytest.raises(ValueError, match="ascending"):
            take_batch(parts, rows[::-1], batch_size=24, keys=SPARSE)


def test_bad_columns_are_named() -> None:
    table = _random_table(np.random.default_rng(2), 5, None)
    kwargs = dict(label_column="label", dense_columns=DENSE, sparse_columns=SPARSE, where="x.parquet")
    with pytest.raises(SchemaError, match="x.parquet: column C9 is missing"):
        check_schema(table.schema, **kwargs | {"sparse_columns": ["C9"]}, multi_hot=False)
    strings = table.set_column(1, "I1", pa.array(["a"] * 5))
    with pytest.raises(SchemaError, match="x.parquet: column I1 has type string; expected float32"):
        check_schema(strings.schema, **kwargs, multi_hot=False)
    lists = _random_table(np.random.default_rng(2), 5, "list")
    with pytest.raises(SchemaError, match="column C1 has type list<item: int64> but the manifest says one-hot"):
        check_schema(lists.schema, **kwargs, multi_hot=False)
    check_schema(lists.schema, **kwargs, multi_hot=True)
    nulls = table.set_column(4, "C1", pa.array([1, None, 3, 4, 5], type=pa.int64()))
    with pytest.raises(SchemaError, match="x.parquet: column C1 has 1 null values"):
        arrow_to_columns(nulls, **kwargs)
