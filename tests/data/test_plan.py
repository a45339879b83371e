"""Partitioning arithmetic: ranges tile the rows, pieces cover them exactly, batch counts fit every rank."""

from __future__ import annotations

import numpy as np
import pytest

from dlrm_scale.data import plan


def _rows_of(pieces: list[plan.Piece], group_starts: np.ndarray) -> list[int]:
    return [int(group_starts[p.group]) + r for p in pieces for r in range(p.start, p.stop)]


@pytest.mark.parametrize("world_size", [1, 2, 3, 7, 64])
def test_ranges_and_pieces_cover_every_row_once(world_size: int) -> None:
    rng = np.random.default_rng(world_size)
    group_rows = rng.integers(0, 40, 23)
    group_starts = np.cumsum(group_rows) - group_rows
    total = int(group_rows.sum())
    order = plan.group_order(len(group_rows), seed=5, epoch=2, shuffle=True)
    assert sorted(order.tolist()) == list(range(23))
    covered = []
    for batch_size in (1, 5, 64):
        covered = []
        for rank in range(world_size):
            lo, hi = plan.rank_range(total, rank=rank, world_size=world_size)
            assert hi - lo in (total // world_size, total // world_size + 1)
            assert plan.num_batches(total, world_size=world_size, batch_size=batch_size) * batch_size >= hi - lo
            pieces = plan.pieces(group_rows, order, lo, hi)
            assert sum(p.rows for p in pieces) == hi - lo
            assert all(0 <= p.start < p.stop <= group_rows[p.group] for p in pieces)
            covered += _rows_of(pieces, group_starts)
        assert sorted(covered) == list(range(total))
    padding = plan.num_batches(total, world_size=world_size, batch_size=64) * 64 - total // world_size
    assert padding <= 64 or total == 0


def test_skip_rows_drops_a_prefix() -> None:
    group_rows = np.array([5, 0, 7, 3])
    stream = plan.pieces(group_rows, np.arange(4), 2, 14)
    starts = np.cumsum(group_rows) - group_rows
    everything = _rows_of(stream, starts)
    for skip in range(len(everything) + 1):
        assert _rows_of(plan.skip_rows(stream, skip), starts) == everything[skip:]


def test_orders_are_seeded() -> None:
    assert plan.group_order(50, seed=1, epoch=0, shuffle=False).tolist() == list(range(50))
    a = plan.group_order(50, seed=1, epoch=0, shuffle=True)
    assert np.array_equal(a, plan.group_order(50, seed=1, epoch=0, shuffle=True))
    assert not np.array_equal(a, plan.group_order(50, seed=1, epoch=1, shuffle=True))
    w = plan.window_permutation(100, seed=1, epoch=0, rank=0, window=3, shuffle=True)
    assert not np.array_equal(w, plan.window_permutation(100, seed=1, epoch=0, rank=1, window=3, shuffle=True))
    with pytest.raises(ValueError, match="rank 2 not in"):
        plan.rank_range(10, rank=2, world_size=2)
