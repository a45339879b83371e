"""Synthetic rows with the shapes of a real preset, for benchmarks and tests without data (``data.path = ""``).

A synthetic split is a fixed table of ``data.synthetic_rows`` rows: row block ``b`` (``BLOCK_ROWS`` rows) is drawn
from a generator seeded by (seed, split, b), so the data is the same whatever the world size, batch size or
epoch, and the loader partitions, shuffles, pads and resumes it exactly like Parquet row groups.

- Ids: per feature a power law over the table's rows, ``P(rank r) ∝ (r + 1) ** -alpha`` (``data.synthetic_alpha``),
  sampled by the inverse CDF of its continuous version, so a 40M-row table costs no 40M-entry array. Rank r is
  then mapped to id ``(r * (2**31 - 1) + shift_f) mod n_f`` (a bijection), which spreads the hot ids over the table
  as hashing does, so row-wise shards see a realistic load.
- Multi-hot: feature f draws ``data.multi_hot_sizes[f]`` ids per row (the MLPerf DCNv2 pooling factors).
- Dense: 13 columns ``log1p(Exponential(scale_j))``, already transformed like prepared data.
- Labels: ``Bernoulli(sigmoid(logit))`` with a hidden logit that sums a pseudo-random weight per (feature, id)
  (a hash, again no per-table array; averaged over a bag) and a linear term in the dense features, so a DLRM can
  learn it: every frequent id carries signal.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np

from dlrm_scale.data.columns import Bag, Columns

BLOCK_ROWS = 65_536  # fixed: the data for a seed must not depend on batch size or world size
_ID_MULTIPLIER = 2**31 - 1  # prime, so coprime with every table size below it; rank * it fits int64
_LOGIT_SCALE = 2.0  # std of the id part of the hidden logit, before bagging
_LABEL_BIAS = -1.0


@dataclass(kw_only=True)
class SyntheticSpec:
    """What to draw: table sizes ``cardinalities (F,)``, ids per row ``hot_sizes (F,)``, power-law ``alpha``."""

    cardinalities: list[int]
    hot_sizes: list[int]
    alpha: float
    num_dense: int
    seed: int

    def __post_init__(self) -> None:
        if len(self.hot_sizes) != len(self.cardinalities):
            raise ValueError(f"{len(self.hot_sizes)} multi-hot sizes for {len(self.cardinalities)} tables")
        for f, (size, hot) in enumerate(zip(self.cardinalities, self.hot_sizes)):
            if size <= 0 or hot <= 0:
                raise ValueError(f"table {f}: cardinality {size} and multi-hot size {hot} must be positive")
            if size >= _ID_MULTIPLIER:
                raise ValueError(f"table {f}: cardinality {size} is too large for the synthetic id map (< 2**31 - 1)")

    @property
    def multi_hot(self) -> bool:
        return any(hot != 1 for hot in self.hot_sizes)


def power_law_ranks(uniform: np.ndarray, cardinality: int, alpha: float) -> np.ndarray:
    """Uniform draws ``(n,)`` in [0, 1) -> ranks ``(n,)`` int64 in [0, cardinality), rank 0 the most frequent.

    Inverse CDF of the density ``x ** -alpha`` on ``[1, cardinality + 1)``, floored: ``P(rank < k) =
    ((k + 1) ** (1 - alpha) - 1) / ((cardinality + 1) ** (1 - alpha) - 1)`` (``log(k + 1) / log(n + 1)`` at 1).
    Computed as ``exp(log1p(c * u) / (1 - alpha))``, in place: twice as fast as ``**`` on float64.
    """
    upper = float(cardinality) + 1.0
    x = np.asarray(uniform, dtype=np.float64).copy()
    if abs(alpha - 1.0) < 1e-9:
        x *= np.log(upper)
    else:
        exponent = 1.0 - alpha
        x *= upper**exponent - 1.0
        np.log1p(x, out=x)
        x *= 1.0 / exponent
    np.exp(x, out=x)
    ranks = x.astype(np.int64)
    ranks -= 1
    return np.clip(ranks, 0, cardinality - 1, out=ranks)


def power_law_cdf(k: np.ndarray, cardinality: int, alpha: float) -> np.ndarray:
    """``P(rank < k)`` of :func:`power_law_ranks` (for tests and docs)."""
    k = np.asarray(k, dtype=np.float64)
    if abs(alpha - 1.0) < 1e-9:
        return np.log(k + 1.0) / np.log(cardinality + 1.0)
    exponent = 1.0 - alpha
    return ((k + 1.0) ** exponent - 1.0) / ((cardinality + 1.0) ** exponent - 1.0)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on uint64, in place (wrapping arithmetic): a cheap, well-spread hash."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


class HiddenModel:
    """The generative model's fixed parameters, drawn from the seed alone (shared by every split and block)."""

    def __init__(self, spec: SyntheticSpec) -> None:
        rng = np.random.default_rng([spec.seed, 0])
        num_features = len(spec.cardinalities)
        self.spec = spec
        self.id_shift = [int(rng.integers(0, size)) for size in spec.cardinalities]
        self.hash_keys = rng.integers(0, 2**63, num_features, dtype=np.int64).astype(np.uint64)
        self.dense_scale = rng.uniform(1.0, 50.0, spec.num_dense)
        self.dense_weights = rng.normal(0.0, 0.3, spec.num_dense) / math.sqrt(max(spec.num_dense, 1))
        # uniform [-1, 1) weights have std 1/sqrt(3); scale so the id part of the logit has std _LOGIT_SCALE
        self.id_scale = _LOGIT_SCALE * math.sqrt(3.0) / math.sqrt(max(num_features, 1))

    def ids(self, uniform: np.ndarray, feature: int) -> np.ndarray:
        size = self.spec.cardinalities[feature]
        ids = power_law_ranks(uniform, size, self.spec.alpha)
        ids *= _ID_MULTIPLIER
        ids += self.id_shift[feature]
        ids %= size
        return ids

    def id_weights(self, ids: np.ndarray, feature: int) -> np.ndarray:
        """``(n,)`` ids -> ``(n,)`` float32 weights in [-1, 1), a fixed pseudo-random function of (seed, feature, id)."""
        hashed = ids.astype(np.uint64)
        hashed ^= self.hash_keys[feature]
        _mix64(hashed)
        hashed >>= np.uint64(40)
        weights = hashed.astype(np.float32)
        weights *= np.float32(2.0 / 2**24)
        weights -= np.float32(1.0)
        return weights

    def logits(self, columns: Columns) -> np.ndarray:
        """``(N,)`` hidden logits of ``columns``' rows: the label is Bernoulli(sigmoid(logit))."""
        logit = _LABEL_BIAS + columns.dense.astype(np.float64) @ self.dense_weights
        for feature in range(len(self.spec.cardinalities)):
            if columns.ids is not None:
                logit += self.id_scale * self.id_weights(columns.ids[feature], feature)
                continue
            bag = columns.bags[feature]
            lengths = bag.lengths
            weights = self.id_weights(bag.values[bag.offsets[0]:bag.offsets[-1]], feature)
            sums = np.add.reduceat(weights, (bag.offsets[:-1] - bag.offsets[0])[lengths > 0]) if weights.size else 0.0
            mean = np.zeros(len(lengths))
            mean[lengths > 0] = sums / lengths[lengths > 0]
            logit += self.id_scale * mean
        return logit


class SyntheticSource:
    """A synthetic split as row groups of ``BLOCK_ROWS`` rows (the loader's row source)."""

    def __init__(self, spec: SyntheticSpec, *, split: str, num_rows: int) -> None:
        if num_rows < 0:
            raise ValueError(f"synthetic_rows must be >= 0, got {num_rows}")
        self.model = HiddenModel(spec)
        self.spec = spec
        self.split_key = zlib.crc32(split.encode())
        full, last = divmod(num_rows, BLOCK_ROWS)
        self.group_rows = np.array([BLOCK_ROWS] * full + ([last] if last else []), dtype=np.int64)
        self.description = f"synthetic split {split!r} ({num_rows} rows, seed {spec.seed})"
        self.fingerprint = f"synthetic:{split}:{num_rows}:{spec.seed}:{spec.alpha}"

    def read(self, group: int) -> Columns:
        num_rows = int(self.group_rows[group])
        rng = np.random.default_rng([self.spec.seed, self.split_key, group])
        dense = np.log1p(rng.standard_exponential((num_rows, self.spec.num_dense), dtype=np.float32)
                         * self.model.dense_scale.astype(np.float32))
        ids = [self.model.ids(rng.random(num_rows * hot), f) for f, hot in enumerate(self.spec.hot_sizes)]
        if self.spec.multi_hot:
            bags = [Bag(values=values, offsets=np.arange(num_rows + 1, dtype=np.int64) * hot, width=hot)
                    for values, hot in zip(ids, self.spec.hot_sizes)]
            columns = Columns(dense=dense, labels=np.empty(num_rows, np.float32), bags=bags)
        else:
            columns = Columns(dense=dense, labels=np.empty(num_rows, np.float32), ids=np.stack(ids))
        probability = 1.0 / (1.0 + np.exp(-self.model.logits(columns)))
        columns.labels[:] = rng.random(num_rows) < probability
        return columns
