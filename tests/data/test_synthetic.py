"""Synthetic batches: preset shapes, ids in range, multi-hot pooling factors, power law, learnable labels."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from torchmetrics.functional import auroc

from dlrm_scale.config import load_config
from dlrm_scale.data.loader import make_loader, table_sizes
from dlrm_scale.data.synthetic import (
    HiddenModel,
    SyntheticSource,
    SyntheticSpec,
    power_law_cdf,
    power_law_ranks,
)


def _loader(preset: str, *, rows: int, rank: int = 0, world_size: int = 1, seed: int = 0, batch_size: int = 256,
            train: bool = True):
    cfg = load_config(preset, ["data.source=synthetic", f"data.synthetic_rows={rows}", "data.num_workers=2"])
    return make_loader(cfg.data, split="train", batch_size=batch_size, rank=rank, world_size=world_size,
                       seed=seed, train=train, device=torch.device("cpu"))


@pytest.mark.parametrize("preset", ["criteo_kaggle", "criteo_terabyte", "mlperf_dcnv2"])
def test_batches_have_the_preset_shapes_and_ids_in_range(preset: str) -> None:
    cfg = load_config(preset)
    sizes = torch.tensor(table_sizes(cfg.data))
    hot = cfg.data.multi_hot_sizes or [1] * len(sizes)
    loader = _loader(preset, rows=700)
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    assert [int(b.mask.sum()) for b in batches] == [256, 256, 188]
    for batch in batches:
        kjt = batch.sparse_features
        assert kjt.keys() == [f"C{i}" for i in range(1, 27)]
        assert batch.dense_features.shape == (256, 13) and torch.isfinite(batch.dense_features).all()
        real = int(batch.mask.sum())
        lengths = kjt.lengths().view(26, 256)
        assert (lengths[:, :real] == torch.tensor(hot)[:, None]).all(), "pooling factor per feature"
        assert (lengths[:, real:] == 0).all()
        assert kjt.values().dtype == torch.int64 and kjt.lengths().dtype == torch.int32
        for f, jagged in enumerate(kjt.split([1] * 26)):
            values = jagged.values()
            assert values.min() >= 0 and values.max() < sizes[f], f"C{f + 1} ids outside its table"
        assert set(batch.labels[:real].unique().tolist()) <= {0.0, 1.0}


def _sort(rows: torch.Tensor) -> torch.Tensor:
    """Rows ordered by their first dense value (continuous, so it identifies a row)."""
    return rows[torch.argsort(rows[:, 0])]


def test_deterministic_for_a_seed_and_independent_of_world_size() -> None:
    def rows(seed: int, world_size: int) -> torch.Tensor:
        dense = [batch.dense_features[batch.mask.bool()] for rank in range(world_size)
                 for batch in _loader("mlperf_dcnv2", rows=300, rank=rank, world_size=world_size, seed=seed)]
        return torch.cat(dense)

    one = rows(seed=1, world_size=1)
    assert torch.equal(one, rows(seed=1, world_size=1))
    assert len(one) == 300
    three = rows(seed=1, world_size=3)
    assert torch.equal(_sort(one), _sort(three)), "the same rows, however many ranks read them"
    assert not torch.equal(_sort(one), _sort(rows(seed=2, world_size=1)))


def test_power_law_matches_its_cdf_without_big_arrays() -> None:
    rng = np.random.default_rng(0)
    for cardinality, alpha in [(40_000_000, 1.05), (1000, 1.0), (50, 0.5)]:
        ranks = power_law_ranks(rng.random(200_000), cardinality, alpha)
        assert ranks.min() >= 0 and ranks.max() < cardinality
        for k in (1, 10, cardinality // 3):
            assert abs((ranks < k).mean() - power_law_cdf(k, cardinality, alpha)) < 0.005
        counts = np.bincount(ranks[ranks < 5], minlength=5)
        assert (np.diff(counts) < 0).all(), "rank 0 is the most frequent"


def test_40m_row_tables_cost_no_per_table_memory() -> None:
    cfg = load_config("criteo_terabyte")
    spec = SyntheticSpec(cardinalities=cfg.data.cardinalities, hot_sizes=[1] * 26, alpha=1.05, num_dense=13, seed=0)
    tracemalloc.start()
    try:
        columns = SyntheticSource(spec, split="train", num_rows=2000).read(0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert columns.ids.max() >= 1_000_000, "ids reach deep into the 40M tables"
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB: something is sized by a table, not by the rows"


def test_hot_ids_are_spread_over_the_table() -> None:
    spec = SyntheticSpec(cardinalities=[1_000_000], hot_sizes=[1], alpha=1.2, num_dense=13, seed=0)
    ids = HiddenModel(spec).ids(np.random.default_rng(0).random(50_000), 0)
    top = np.unique(ids, return_counts=True)
    hottest = top[0][np.argsort(-top[1])[:20]]
    assert hottest.max() - hottest.min() > 500_000, "hot ids are not clustered at the start of the table"


def test_labels_follow_the_hidden_model() -> None:
    spec = SyntheticSpec(cardinalities=[100_000] * 26, hot_sizes=[1] * 26, alpha=1.05, num_dense=13, seed=3)
    source = SyntheticSource(spec, split="train", num_rows=20_000)
    columns = source.read(0)
    logits = torch.from_numpy(source.model.logits(columns))
    labels = torch.from_numpy(columns.labels).long()
    assert 0.05 < labels.float().mean() < 0.6
    assert auroc(logits, labels, task="binary") > 0.75, "the label must be predictable from the features"
    assert 0.45 < auroc(logits.roll(1), labels, task="binary") < 0.55
