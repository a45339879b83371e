"""Test helpers for data_prep: a tiny raw-Criteo writer, a plain per-row reference of the preprocessing, and
readers of prepared directories. Deliberately simple Python (no shared code with data_prep), so the tests compare
two independent implementations."""

from __future__ import annotations

import gzip
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dlrm_scale.cli import main as dlrm_main
from dlrm_scale.data.manifest import Manifest

NUM_DENSE, NUM_SPARSE = 13, 26
DENSE = [f"I{i + 1}" for i in range(NUM_DENSE)]
SPARSE = [f"C{i + 1}" for i in range(NUM_SPARSE)]


def random_lines(rows: int, seed: int, *, labeled: bool = True, negatives: tuple[int, ...] = (-1, -2, -3),
                 odd_hex: bool = True) -> list[str]:
    """Raw lines (no line end): missing fields, negative I2 values, small vocabularies (so frequencies matter),
    and with ``odd_hex`` a few upper-case and short hex values (``int(v, 16)`` accepts both)."""
    rng = np.random.default_rng(seed)
    pools = [[f"{v:08x}" for v in rng.integers(0, 2**32, 5 + 7 * j)] for j in range(NUM_SPARSE)]
    lines = []
    for _ in range(rows):
        fields = [str(int(rng.random() < 0.3))] if labeled else []
        for j in range(NUM_DENSE):
            if rng.random() < 0.2:
                fields.append("")
            elif j == 1 and rng.random() < 0.1:
                fields.append(str(negatives[rng.integers(len(negatives))]))
            else:
                fields.append(str(int(rng.pareto(1.2) * 20)))
        for j in range(NUM_SPARSE):
            draw = rng.random()
            if draw < 0.12:
                fields.append("")
            elif odd_hex and draw < 0.14:
                fields.append(f"{rng.integers(0, 4096):x}")
            elif odd_hex and draw < 0.16:
                fields.append(f"{rng.integers(0, 2**32):08X}")
            else:
                pool = pools[j]
                fields.append(pool[min(int(rng.pareto(1.0)), len(pool) - 1)])
        lines.append("\t".join(fields))
    return lines


def write_lines(path: Path, lines: list[str], *, gz: bool = False, newline: str = "\n", header: str | None = None) -> Path:
    text = "".join(line + newline for line in ([header] if header else []) + lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(text.encode())
    else:
        path.write_bytes(text.encode())
    return path


def build_vocab(lines: list[list[str]], *, labeled_offsets: list[int], max_ind_range: int,
                min_frequency: int) -> list[dict[int, int]]:
    """Reference vocabulary: per column, value -> id (1 = most frequent; ties by smaller value)."""
    counts = [Counter() for _ in range(NUM_SPARSE)]
    for fields, offset in zip(lines, labeled_offsets):
        for j in range(NUM_SPARSE):
            value = fields[offset + NUM_DENSE + j]
            if value:
                key = int(value, 16)
                counts[j][key % max_ind_range if max_ind_range else key] += 1
    vocab = []
    for counter in counts:
        kept = sorted(((-c, v) for v, c in counter.items() if c >= min_frequency))
        vocab.append({v: i + 1 for i, (_, v) in enumerate(kept)})
    return vocab


def reference_row(fields: list[str], *, labeled: bool, transform: str = "log1p", max_ind_range: int = 0,
                  vocab: list[dict[int, int]] | None = None) -> tuple[int, list[float], list[int]]:
    """One line's expected output, written out the obvious way."""
    offset = 1 if labeled else 0
    label = int(float(fields[0])) if labeled else -1
    dense = []
    for value in fields[offset:offset + NUM_DENSE]:
        x = int(float(value)) if value else 0
        dense.append(math.log1p(max(x, 0)) if transform == "log1p" else math.log(max(x, -2) + 3))
    ids = []
    for j, value in enumerate(fields[offset + NUM_DENSE:offset + NUM_DENSE + NUM_SPARSE]):
        h = int(value or "0", 16)
        h = h % max_ind_range if max_ind_range else h
        if vocab is not None:
            ids.append(vocab[j].get(h, 0) if value else 0)
        else:
            ids.append(h)
    return label, dense, ids


def reference(lines: list[list[str]], **kwargs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [reference_row(fields, **kwargs) for fields in lines]
    return (np.array([r[0] for r in rows], dtype=np.int8).reshape(-1),
            np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, NUM_DENSE),
            np.array([r[2] for r in rows], dtype=np.int64).reshape(-1, NUM_SPARSE))


def read_split(out: Path, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``labels (N,)``, ``dense (N, 13) float32``, ``ids (N, 26) int64`` of a split, shards in manifest order."""
    manifest = Manifest.load(out)
    tables = [pq.read_table(out / shard.path) for shard in manifest.split(split).shards]
    if not tables:
        return np.zeros(0, np.int8), np.zeros((0, NUM_DENSE), np.float32), np.zeros((0, NUM_SPARSE), np.int64)
    table = pa.concat_tables(tables)
    return (table.column("label").to_numpy(),
            np.stack([table.column(c).to_numpy() for c in DENSE], axis=1),
            np.stack([table.column(c).to_numpy() for c in SPARSE], axis=1))


def assert_rows_equal(got: tuple, expected: tuple) -> None:
    labels, dense, ids = got
    exp_labels, exp_dense, exp_ids = expected
    assert len(labels) == len(exp_labels)
    np.testing.assert_array_equal(labels, exp_labels)
    np.testing.assert_array_equal(ids, exp_ids)
    np.testing.assert_allclose(dense, exp_dense.astype(np.float32), rtol=1e-6, atol=0)
    assert dense.dtype == np.float32 and ids.dtype == np.int64 and labels.dtype == np.int8


def prep(*args: str | Path) -> int:
    """``dlrm-scale prep criteo ARGS --no-progress`` in this process; returns the exit status."""
    return dlrm_main(["prep", "criteo", *map(str, args), "--no-progress"])


def split_fields(lines: list[str], delimiter: str = "\t") -> list[list[str]]:
    return [line.split(delimiter) for line in lines]
