"""The loader over real Parquet shards: exactly once across ranks, balanced, reproducible, resumable, strict."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from dlrm_scale.data.arrow import SchemaError
from dlrm_scale.data.loader import Loader, LoaderStateError, make_loader, table_sizes
from dlrm_scale.data.manifest import Manifest, ManifestError
from tests.data.shards import CARD, NUM_SPARSE, batch_row_ids, data_config, write_dataset

TRAIN_ROWS = 37 + 50 + 13 + 64 + 29 + 41 + 9


def _loader(root: Path, *, rank: int = 0, world_size: int = 1, batch_size: int = 16, seed: int = 0,
            train: bool = True, split: str = "train", **overrides) -> Loader:
    return make_loader(data_config(root, **overrides), split=split, batch_size=batch_size, rank=rank,
                       world_size=world_size, seed=seed, train=train, device=torch.device("cpu"))


def _pass(loader: Loader, *, multi_hot: bool = False) -> list[int]:
    rows, batches = [], 0
    for batch in loader:
        assert batch.labels.shape == (loader.batch_size,)
        rows += batch_row_ids(batch, multi_hot=multi_hot)
        batches += 1
    assert batches == len(loader)
    return rows


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("train", [True, False])
def test_every_row_exactly_once_per_epoch(one_hot_dir: Path, world_size: int, train: bool) -> None:
    for epoch in range(2):
        per_rank = []
        lengths = set()
        for rank in range(world_size):
            loader = _loader(one_hot_dir, rank=rank, world_size=world_size, train=train)
            loader.set_epoch(epoch)
            lengths.add(len(loader))
            per_rank.append(_pass(loader))
        assert len(lengths) == 1, "every rank must run the same number of batches"
        seen = [row for rows in per_rank for row in rows]
        assert sorted(seen) == list(range(TRAIN_ROWS)), "each row exactly once, none dropped"
        sizes = [len(rows) for rows in per_rank]
        assert max(sizes) - min(sizes) <= 1, f"unbalanced ranks: {sizes}"
        if not train:
            assert seen == list(range(TRAIN_ROWS)), "evaluation reads in file order"


def test_eval_split_and_tiny_splits(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": [[2]], "val": [], "test": []})
    for world_size in (1, 3):
        loaders = [_loader(tmp_path, rank=r, world_size=world_size, batch_size=4) for r in range(world_size)]
        assert {len(loader) for loader in loaders} == {1}
        assert sorted(row for loader in loaders for row in _pass(loader)) == [0, 1]
    empty = _loader(tmp_path, split="test", batch_size=4)
    assert len(empty) == 0 and list(empty) == []


def test_balancing_splits_row_groups(tmp_path: Path) -> None:
    """One big row group and two ranks: the group is split, not given whole to one rank."""
    write_dataset(tmp_path, {"train": [[101]], "val": [[1]]})
    loaders = [_loader(tmp_path, rank=r, world_size=2, batch_size=8) for r in range(2)]
    assert [loader.rank_rows for loader in loaders] == [51, 50]
    assert len(loaders[0]) == len(loaders[1]) == 7
    rows = [_pass(loader) for loader in loaders]
    assert [len(r) for r in rows] == [51, 50]
    assert sorted(rows[0] + rows[1]) == list(range(101))


def test_order_reproducible_for_seed_and_changes_with_seed_and_epoch(one_hot_dir: Path) -> None:
    def order(seed: int, epoch: int, workers: int = 2) -> list[int]:
        loader = _loader(one_hot_dir, seed=seed, num_workers=workers, rank=1, world_size=2)
        loader.set_epoch(epoch)
        return _pass(loader)

    reference = order(seed=3, epoch=0)
    assert order(seed=3, epoch=0, workers=1) == reference, "thread count must not change the order"
    assert order(seed=3, epoch=0) == reference
    assert order(seed=4, epoch=0) != reference
    assert order(seed=3, epoch=1) != reference
    assert reference != sorted(reference), "training order is shuffled"


def test_shuffle_buffer_bounds_how_far_rows_move(tmp_path: Path) -> None:
    """With one row group, shuffling only permutes rows within windows of shuffle_buffer_batches batches."""
    write_dataset(tmp_path, {"train": [[96]], "val": [[1]]})
    rows = _pass(_loader(tmp_path, batch_size=8, shuffle_buffer_batches=3))
    for window in range(4):
        assert sorted(rows[window * 24:(window + 1) * 24]) == list(range(window * 24, (window + 1) * 24))
    assert rows != list(range(96))


@pytest.mark.parametrize("world_size", [1, 3])
def test_resume_mid_epoch_sees_exactly_the_remaining_rows(one_hot_dir: Path, world_size: int) -> None:
    for rank in range(world_size):
        full = _loader(one_hot_dir, rank=rank, world_size=world_size, batch_size=8)
        full.set_epoch(1)
        expected = [batch_row_ids(batch) for batch in full]
        for stop in sorted({0, 1, 2, 3, len(full) // 2, len(full) - 1, len(full)}):
            first = _loader(one_hot_dir, rank=rank, world_size=world_size, batch_size=8)
            first.set_epoch(1)
            batches = iter(first)
            seen = [batch_row_ids(next(batches)) for _ in range(stop)]
            state = json.loads(json.dumps(first.state_dict()))  # checkpoints store it as plain data
            batches.close()
            assert state["epoch"] == 1 and state["batches_consumed"] == stop

            resumed = _loader(one_hot_dir, rank=rank, world_size=world_size, batch_size=8)
            resumed.load_state_dict(state)
            resumed.set_epoch(1)  # a trainer re-entering its epoch loop must not restart the epoch
            rest = [batch_row_ids(batch) for batch in resumed]
            assert len(seen) + len(rest) == len(full)
            assert seen + rest == expected, f"rank {rank}, stopped after {stop} batches"
            resumed.set_epoch(2)
            assert len(list(resumed)) == len(full), "the next epoch starts from its beginning"


def test_state_from_another_run_is_refused(one_hot_dir: Path) -> None:
    state = _loader(one_hot_dir, world_size=2).state_dict()
    with pytest.raises(LoaderStateError, match="world_size: checkpoint has 2, this run has 3"):
        _loader(one_hot_dir, world_size=3).load_state_dict(state)
    with pytest.raises(LoaderStateError, match="seed"):
        _loader(one_hot_dir, world_size=2, seed=9).load_state_dict(state)
    with pytest.raises(LoaderStateError, match="outside"):
        _loader(one_hot_dir, world_size=2).load_state_dict(state | {"batches_consumed": 10_000})


def test_repeated_passes_without_set_epoch_repeat_the_epoch(one_hot_dir: Path) -> None:
    loader = _loader(one_hot_dir, train=False, split="val")
    assert _pass(loader) == _pass(loader) == list(range(TRAIN_ROWS, TRAIN_ROWS + 31))


def test_multi_hot_shards(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": [[30, 25], [17]], "val": [[5]]}, multi_hot=True)
    seen = []
    for rank in range(2):
        loader = _loader(tmp_path, rank=rank, world_size=2, batch_size=8, multi_hot_sizes=[3] * NUM_SPARSE,
                         cardinalities=[CARD] * NUM_SPARSE)
        seen += _pass(loader, multi_hot=True)
    assert sorted(seen) == list(range(72))


def test_table_sizes_and_manifest_mismatch(one_hot_dir: Path) -> None:
    assert table_sizes(data_config(one_hot_dir)) == [CARD] * NUM_SPARSE
    with pytest.raises(ManifestError, match="dense_transform: data has 'log1p', config has 'log3'"):
        _loader(one_hot_dir, dense_transform="log3")
    with pytest.raises(ManifestError, match="multi_hot: config sets data.multi_hot_sizes but the data is one-hot"):
        _loader(one_hot_dir, multi_hot_sizes=[2] * NUM_SPARSE)
    with pytest.raises(ManifestError, match="split 'nope' not in manifest"):
        _loader(one_hot_dir, split="nope")


def test_bad_shards_name_the_file(one_hot_dir: Path) -> None:
    manifest = Manifest.load(one_hot_dir)
    shard = manifest.splits["train"].shards[1]
    shard.rows += 1
    manifest.splits["train"].rows += 1
    manifest.save(one_hot_dir)
    with pytest.raises(ManifestError, match=r"part-00001.parquet: manifest says 65 rows in 1 row groups, the file has 64"):
        _loader(one_hot_dir)
    (one_hot_dir / shard.path).write_bytes(b"not parquet")
    with pytest.raises(SchemaError, match=r"part-00001.parquet: not a readable Parquet file"):
        _loader(one_hot_dir)
    (one_hot_dir / shard.path).unlink()
    with pytest.raises(ManifestError, match=r"part-00001.parquet: shard listed in .* does not exist"):
        _loader(one_hot_dir)


def test_read_errors_reach_the_consumer_and_threads_stop(one_hot_dir: Path) -> None:
    loader = _loader(one_hot_dir, batch_size=8)

    def broken(group: int):
        raise SchemaError(f"group {group}: corrupt page")

    loader.source.read = broken
    with pytest.raises(SchemaError, match="corrupt page"):
        list(loader)
    good = _loader(one_hot_dir, batch_size=8)
    for index, _ in enumerate(good):
        if index == 1:
            break
    deadline = time.monotonic() + 5
    while any(t.name.startswith("loader-") for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("loader-")]


@pytest.mark.gpu
def test_cuda_batches_match_host_batches(one_hot_dir: Path) -> None:
    host = list(_loader(one_hot_dir, batch_size=16, pin_memory=True))
    device = list(make_loader(data_config(one_hot_dir, pin_memory=True), split="train", batch_size=16, rank=0,
                              world_size=1, seed=0, train=True, device=torch.device("cuda")))
    assert len(host) == len(device)
    for h, d in zip(host, device):
        assert d.dense_features.is_cuda and d.mask.is_cuda and d.sparse_features.values().is_cuda
        torch.testing.assert_close(d.dense_features.cpu(), h.dense_features)
        torch.testing.assert_close(d.mask.cpu(), h.mask)
        torch.testing.assert_close(d.sparse_features.values().cpu(), h.sparse_features.values())
        torch.testing.assert_close(d.sparse_features.lengths().cpu(), h.sparse_features.lengths())


def test_synthetic_data_only_when_asked_for_and_its_evaluation_bounded() -> None:
    """``data.source = "synthetic"`` draws rows; its evaluation split holds at most ``synthetic_eval_rows``. An
    empty ``data.path`` with the default source is an error naming both fixes, never synthetic data."""
    from dlrm_scale.config import ConfigError, load_config

    cfg = load_config("tiny_cpu", ["data.source=synthetic", "data.cardinalities=[40, 50]",
                                   "data.synthetic_rows=5000", "data.synthetic_eval_rows=300"])
    common = dict(split="val", batch_size=64, rank=0, world_size=1, seed=0, device="cpu")
    assert make_loader(cfg.data, train=True, **common).num_rows == 5000
    assert make_loader(cfg.data, train=False, **common).num_rows == 300
    empty = load_config("tiny_cpu", ["data.path="])
    with pytest.raises(ConfigError, match="data.path is empty: set --set data.path=DIR .*data.source=synthetic"):
        make_loader(empty.data, train=True, **common)
