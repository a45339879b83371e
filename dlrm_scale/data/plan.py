"""Which rows each rank reads, in which order: pure functions of (row-group sizes, seed, epoch, world size).

The unit of assignment is a contiguous slice of one row group (a :class:`Piece`). Each epoch:

1. the row groups are put in a seeded order (the same on every rank; file order when not shuffling);
2. that order defines one virtual sequence of all N rows, cut into ``world_size`` contiguous ranges whose sizes
   differ by at most one row (``N // W`` each, one more for the first ``N % W`` ranks). A row group is split only
   where a range boundary falls inside it, so at most ``W - 1`` groups are shared between two ranks;
3. every rank runs ``ceil(ceil(N / W) / B)`` batches of B rows and pads only its own shortfall with masked rows:
   at most B padding rows per rank and epoch.

Within a rank, the row stream is cut into windows of ``buffer_batches * B`` rows, and each window's rows are put
in a seeded random order (the bounded shuffle buffer); batch ``k`` is the next B rows of that order. Windows
start at batch boundaries, so batch ``k`` depends only on window ``k // buffer_batches``: a resumed run re-reads
one window, not the epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

_ORDER_STREAM = 1
_WINDOW_STREAM = 2


@dataclass(frozen=True, kw_only=True)
class Piece:
    """Rows ``[start, stop)`` of row group ``group``."""

    group: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start


def group_order(num_groups: int, *, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """``(G,)`` permutation of row groups for the epoch; identical on every rank (it must be: ranks cut it)."""
    if not shuffle:
        return np.arange(num_groups)
    return np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(num_groups)


def rank_range(total_rows: int, *, rank: int, world_size: int) -> tuple[int, int]:
    """``[lo, hi)`` of the epoch's virtual row sequence that ``rank`` reads."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, {world_size})")
    base, extra = divmod(total_rows, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


def num_batches(total_rows: int, *, world_size: int, batch_size: int) -> int:
    """Batches every rank runs in an epoch: enough for the largest rank range."""
    return math.ceil(math.ceil(total_rows / world_size) / batch_size)


def pieces(group_rows: np.ndarray, order: np.ndarray, lo: int, hi: int) -> list[Piece]:
    """The pieces covering rows ``[lo, hi)`` of the sequence that lays row groups out in ``order``."""
    sizes = group_rows[order]
    ends = np.cumsum(sizes)
    starts = ends - sizes
    result = []
    first = int(np.searchsorted(ends, lo, side="right"))
    for position in range(first, len(order)):
        if starts[position] >= hi:
            break
        start = max(lo, int(starts[position])) - int(starts[position])
        stop = min(hi, int(ends[position])) - int(starts[position])
        if stop > start:
            result.append(Piece(group=int(order[position]), start=start, stop=stop))
    return result


def skip_rows(stream: list[Piece], rows: int) -> list[Piece]:
    """``stream`` without its first ``rows`` rows."""
    result = []
    for piece in stream:
        if rows >= piece.rows:
            rows -= piece.rows
            continue
        result.append(Piece(group=piece.group, start=piece.start + rows, stop=piece.stop))
        rows = 0
    return result


def window_permutation(num_rows: int, *, seed: int, epoch: int, rank: int, window: int, shuffle: bool) -> np.ndarray:
    """``(num_rows,)`` order of a window's rows: the bounded shuffle buffer, seeded per (seed, epoch, rank, window)."""
    if not shuffle:
        return np.arange(num_rows)
    return np.random.default_rng([seed, epoch, _WINDOW_STREAM, rank, window]).permutation(num_rows)
