"""Synthetic click logs in the exact raw Criteo layout, with a hidden model a correct trainer can learn.

Writes ``OUT/day_0`` … ``OUT/day_{K-1}`` (``.gz`` with ``--gz``): one example per line, tab-separated, no header:
``label, I1..I13, C1..C26``. Integers may be empty (missing, 5–45% per column) or, in I2 as in the real logs,
small negatives; categoricals are 8 lowercase hex digits or empty. ``--rows`` is the total over all days.

Why a hidden model: the quickstart and the tests must tell a working trainer from a broken one, so the label is
drawn as ``Bernoulli(sigmoid(logit))`` where the logit mixes a per-value weight of every categorical feature, the
log of every dense feature, and factorisation-machine pairwise terms between a subset of categoricals (the kind
of structure DLRM's dot interaction captures). Categorical values follow a truncated power law per feature, like
the real logs, so frequent values are learnable and the tail is noise. The hidden model depends on the seed only,
so every day (including held-out ones) is drawn from the same distribution. Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

NUM_DENSE = 13
NUM_SPARSE = 26
CHUNK_ROWS = 65_536  # fixed: the output for a seed must not depend on anything but the seed and row counts
# Vocabulary sizes shaped like Criteo's (a few tiny, a few huge), capped by --max-vocab.
BASE_VOCAB = [1460, 583, 100_000, 50_000, 305, 24, 12_517, 633, 3, 93_145, 5683, 80_000, 3194, 27, 14_992,
              60_000, 10, 5652, 2173, 4, 70_000, 18, 15, 28_618, 105, 14_257]
NEGATIVE_COLUMN = 1  # I2 is the one integer column with negatives in the real logs
INTERACTING = [0, 1, 3, 5, 7, 10, 13, 16, 18, 21]  # categoricals that carry pairwise (FM) terms
LATENT_DIM = 4
TARGET_POSITIVE_RATE = 0.25


@dataclass(kw_only=True)
class HiddenModel:
    """The generative model: per-feature vocabularies, sampling laws and the weights of the label's logit."""

    vocab_sizes: list[int]
    zipf_exponents: np.ndarray  # (26,)
    hex_values: list[np.ndarray]  # per feature (V_i,) uint32: the hashes written to the file
    value_weights: list[np.ndarray]  # per feature (V_i + 1,), last entry = weight of "missing"
    value_factors: dict[int, np.ndarray]  # feature -> (V_i + 1, LATENT_DIM)
    cat_missing: np.ndarray  # (26,) probability a categorical is empty
    dense_missing: np.ndarray  # (13,)
    dense_shape: np.ndarray  # (13,) Pareto shapes
    dense_scale: np.ndarray  # (13,)
    dense_weights: np.ndarray  # (13,) weight of log1p(x) in the logit
    bias: float


def build_hidden_model(seed: int, max_vocab: int = 20_000) -> HiddenModel:
    rng = np.random.default_rng([seed, 0])
    vocab_sizes = [min(v, max_vocab) for v in BASE_VOCAB]
    model = HiddenModel(
        vocab_sizes=vocab_sizes,
        zipf_exponents=rng.uniform(1.2, 2.0, NUM_SPARSE),
        hex_values=[rng.integers(0, 2**32, v, dtype=np.uint64).astype(np.uint32) for v in vocab_sizes],
        value_weights=[rng.normal(0.0, rng.uniform(0.3, 0.8), v + 1) for v in vocab_sizes],
        value_factors={i: rng.normal(0.0, 0.25, (vocab_sizes[i] + 1, LATENT_DIM)) for i in INTERACTING},
        cat_missing=rng.uniform(0.0, 0.25, NUM_SPARSE),
        dense_missing=rng.uniform(0.05, 0.45, NUM_DENSE),
        dense_shape=rng.uniform(0.8, 2.5, NUM_DENSE),
        dense_scale=rng.uniform(1.0, 50.0, NUM_DENSE),
        dense_weights=rng.normal(0.0, 0.25, NUM_DENSE),
        bias=0.0,
    )
    # Calibrate the bias once, on a sample from a stream of its own, so every day shares it.
    _, _, _, logits = _draw(model, 50_000, np.random.default_rng([seed, 10**6]))
    model.bias = float(_bias_for_rate(logits, TARGET_POSITIVE_RATE))
    return model


def _bias_for_rate(logits: np.ndarray, rate: float) -> float:
    low, high = -20.0, 20.0
    for _ in range(60):
        mid = (low + high) / 2
        if (1 / (1 + np.exp(-(logits + mid)))).mean() > rate:
            high = mid
        else:
            low = mid
    return (low + high) / 2


def _power_law_ranks(rng: np.random.Generator, size: int, vocab: int, exponent: float) -> np.ndarray:
    """Ranks in [0, vocab) with P(rank k) ∝ (k+1)^-exponent (continuous inverse CDF, then floored)."""
    u = rng.random(size)
    one_minus = 1.0 - exponent
    x = ((vocab + 1) ** one_minus - 1.0) * u + 1.0
    return np.minimum(np.floor(x ** (1.0 / one_minus)).astype(np.int64) - 1, vocab - 1)


def _draw(model: HiddenModel, rows: int, rng: np.random.Generator):
    """One chunk: labels (N,) int8, dense (N, 13) int64 + missing mask, categorical indices (N, 26) (-1 = missing),
    and the hidden logits (N,) (before the bias is added when called during calibration)."""
    cats = np.empty((rows, NUM_SPARSE), dtype=np.int64)
    logits = np.full(rows, model.bias)
    for i, vocab in enumerate(model.vocab_sizes):
        ranks = _power_law_ranks(rng, rows, vocab, model.zipf_exponents[i])
        missing = rng.random(rows) < model.cat_missing[i]
        ranks[missing] = -1
        cats[:, i] = ranks
        logits += model.value_weights[i][ranks]  # index -1 = the "missing" weight
    for a_pos, a in enumerate(INTERACTING):
        for b in INTERACTING[a_pos + 1:]:
            logits += np.einsum("nd,nd->n", model.value_factors[a][cats[:, a]], model.value_factors[b][cats[:, b]])
    dense = np.floor(model.dense_scale * (rng.pareto(model.dense_shape, (rows, NUM_DENSE)))).astype(np.int64)
    negative = rng.random(rows) < 0.04
    dense[negative, NEGATIVE_COLUMN] = -rng.integers(1, 4, int(negative.sum()))
    dense_missing = rng.random((rows, NUM_DENSE)) < model.dense_missing
    log_dense = np.log1p(np.where(dense_missing, 0, np.maximum(dense, 0)))
    logits += (log_dense - log_dense.mean(axis=0)) @ model.dense_weights
    labels = (rng.random(rows) < 1 / (1 + np.exp(-logits))).astype(np.int8)
    return labels, (dense, dense_missing), cats, logits


def _hex_strings(values: np.ndarray) -> np.ndarray:
    """uint32 (N,) -> (N,) ``S8`` of lowercase hex digits, vectorised (no per-row Python)."""
    shifts = np.arange(28, -1, -4, dtype=np.uint32)
    nibbles = (values[:, None] >> shifts) & 0xF
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    return np.ascontiguousarray(chars).view("S8").ravel()


def generate_chunk(model: HiddenModel, rows: int, rng: np.random.Generator):
    """A ``pyarrow.Table`` of one chunk in raw layout (label, I1..I13, C1..C26; nulls = empty fields), and the
    hidden logits (N,) so tests can check how learnable the labels are."""
    import pyarrow as pa

    labels, (dense, dense_missing), cats, logits = _draw(model, rows, rng)
    columns = {"label": pa.array(labels)}
    for j in range(NUM_DENSE):
        columns[f"I{j + 1}"] = pa.array(dense[:, j], mask=dense_missing[:, j])
    for i in range(NUM_SPARSE):
        ranks = cats[:, i]
        hexes = _hex_strings(model.hex_values[i][np.maximum(ranks, 0)])
        columns[f"C{i + 1}"] = pa.array(hexes, type=pa.binary(), mask=ranks < 0).cast(pa.string())
    return pa.table(columns), logits


def day_rows(total: int, days: int) -> list[int]:
    """``total`` rows split over ``days`` files, the first ``total % days`` one row longer."""
    base, extra = divmod(total, days)
    return [base + (1 if d < extra else 0) for d in range(days)]


def write_day(path: Path, model: HiddenModel, rows: int, seed: int, day: int, gz: bool) -> None:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng([seed, day + 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    options = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    tmp = path.with_name(path.name + ".tmp")
    sink = pa.CompressedOutputStream(str(tmp), "gzip") if gz else pa.OSFile(str(tmp), "wb")
    with sink:
        for start in range(0, rows, CHUNK_ROWS):
            table, _ = generate_chunk(model, min(CHUNK_ROWS, rows - start), rng)
            pcsv.write_csv(table, sink, write_options=options)
    tmp.replace(path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, required=True, help="total number of rows over all days")
    parser.add_argument("--days", type=int, default=1, help="number of day files (day_0 … day_{K-1})")
    parser.add_argument("--out", type=Path, required=True, help="output directory (created if missing)")
    parser.add_argument("--gz", action="store_true", help="gzip each day file (day_N.gz)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the hidden model and of every draw")
    parser.add_argument("--max-vocab", type=int, default=20_000,
                        help="cap on each categorical feature's number of distinct values")


def run(args: argparse.Namespace) -> int:
    if args.rows <= 0 or args.days <= 0:
        print("synth: --rows and --days must be positive", file=sys.stderr)
        return 2
    model = build_hidden_model(args.seed, args.max_vocab)
    start = time.perf_counter()
    for day, rows in enumerate(day_rows(args.rows, args.days)):
        path = args.out / (f"day_{day}.gz" if args.gz else f"day_{day}")
        write_day(path, model, rows, args.seed, day, args.gz)
        print(f"synth: wrote {path} ({rows:,} rows)", file=sys.stderr)
    print(f"synth: {args.rows:,} rows in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0
