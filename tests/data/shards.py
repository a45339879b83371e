"""Small prepared datasets written with pyarrow, in the manifest layout, with a unique id planted in every row.

Row ``r`` has ``I1 = r`` (exact in float32 for these sizes), ``label = r % 2``, ``I_j = r + j / 16`` and, one-hot,
``C_f = (r * 7 + f) % CARD``; multi-hot, ``C_f`` holds ``(r + f) % 4`` ids ``(r * 31 + f * 5 + i) % CARD``.
Tests find a row's id in any batch and check every column of the row came with it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dlrm_scale.config import DataConfig, dense_feature_names, sparse_feature_names
from dlrm_scale.data.batch import Batch
from dlrm_scale.data.manifest import Manifest, Shard, Split, sha256_file

CARD = 1000
NUM_DENSE = 13
NUM_SPARSE = 26
DENSE = dense_feature_names(NUM_DENSE)
SPARSE = sparse_feature_names(NUM_SPARSE)


def one_hot_id(row: int, feature: int) -> int:
    return (row * 7 + feature) % CARD


def multi_hot_ids(row: int, feature: int) -> list[int]:
    return [(row * 31 + feature * 5 + i) % CARD for i in range((row + feature) % 4)]


def make_table(row_ids: np.ndarray, *, multi_hot: bool) -> pa.Table:
    data: dict[str, pa.Array] = {"label": pa.array((row_ids % 2).astype(np.int8))}
    for j, name in enumerate(DENSE):
        data[name] = pa.array(row_ids.astype(np.float32) + np.float32(j / 16))
    for f, name in enumerate(SPARSE):
        if multi_hot:
            data[name] = pa.array([multi_hot_ids(int(r), f) for r in row_ids], type=pa.list_(pa.int64()))
        else:
            data[name] = pa.array([one_hot_id(int(r), f) for r in row_ids], type=pa.int64())
    return pa.table(data)


def write_dataset(root: Path, splits: dict[str, list[list[int]]], *, multi_hot: bool = False) -> dict[str, int]:
    """Writes ``root/<split>/part-NNNNN.parquet`` with the given row-group sizes per shard, and the manifest.
    Row ids run on across shards and splits; returns each split's first id."""
    next_id, first_ids, manifest_splits = 0, {}, {}
    for split, shards in splits.items():
        first_ids[split] = next_id
        entries = []
        for number, group_sizes in enumerate(shards):
            relative = f"{split}/part-{number:05d}.parquet"
            (root / split).mkdir(parents=True, exist_ok=True)
            with pq.ParquetWriter(root / relative, make_table(np.arange(1), multi_hot=multi_hot).schema) as writer:
                for size in group_sizes:
                    writer.write_table(make_table(np.arange(next_id, next_id + size), multi_hot=multi_hot),
                                       row_group_size=max(size, 1))
                    next_id += size
            entries.append(Shard(path=relative, rows=sum(group_sizes), row_groups=len(group_sizes),
                                 sha256=sha256_file(root / relative)))
        manifest_splits[split] = Split(rows=sum(s.rows for s in entries), shards=entries)
    Manifest(dataset="test", encoding="hash", max_ind_range=CARD, min_frequency=1, dense_transform="log1p",
             dense_columns=DENSE, sparse_columns=SPARSE, cardinalities=[CARD] * NUM_SPARSE, multi_hot=multi_hot,
             splits=manifest_splits).save(root)
    return first_ids


def data_config(root: Path, **overrides) -> DataConfig:
    values = dict(path=str(root), encoding="hash", max_ind_range=CARD, dense_transform="log1p", pin_memory=False,
                  num_workers=2, prefetch_batches=2, shuffle_buffer_batches=2)
    values.update(overrides)
    return DataConfig(**values)


def batch_row_ids(batch: Batch, *, multi_hot: bool = False) -> list[int]:
    """The planted ids of ``batch``'s real rows, after checking each row's columns and the padding rows."""
    size = batch.labels.shape[0]
    real = batch.mask.bool()
    num_real = int(real.sum())
    assert batch.dense_features.shape == (size, NUM_DENSE) and batch.dense_features.dtype.is_floating_point
    assert batch.labels.dtype == batch.mask.dtype == batch.dense_features.dtype
    assert real[:num_real].all(), "padding rows come after the real ones"
    ids = batch.dense_features[:num_real, 0].long()
    assert (batch.dense_features[:num_real, 1] == ids.float() + 1 / 16).all()
    assert (batch.labels[:num_real] == (ids % 2).float()).all()
    assert (batch.dense_features[num_real:] == 0).all() and (batch.labels[num_real:] == 0).all()
    kjt = batch.sparse_features
    assert kjt.keys() == SPARSE and kjt.stride() == size
    assert kjt.lengths().dtype == torch.int32 and kjt.values().dtype == torch.int64
    for f, jagged in enumerate(kjt.to(batch.labels.device).split([1] * NUM_SPARSE)):
        lengths = jagged.lengths().tolist()
        assert lengths[num_real:] == [0] * (size - num_real), "padding rows carry no ids"
        values = jagged.values().tolist()
        start = 0
        for row, length in zip(ids.tolist(), lengths[:num_real]):
            expected = multi_hot_ids(row, f) if multi_hot else [one_hot_id(row, f)]
            assert values[start:start + length] == expected, f"row {row} feature C{f + 1}"
            start += length
    return ids.tolist()
