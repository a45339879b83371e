"""The synthetic generator writes the raw Criteo layout exactly, deterministically, with learnable labels."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torchmetrics.functional import auroc

from data_prep import synth

HEX = re.compile(r"^[0-9a-f]{8}$")


def _write(tmp_path: Path, rows: int, days: int, seed: int = 0, gz: bool = False) -> list[Path]:
    model = synth.build_hidden_model(seed)
    paths = []
    for day, day_rows in enumerate(synth.day_rows(rows, days)):
        path = tmp_path / (f"day_{day}.gz" if gz else f"day_{day}")
        synth.write_day(path, model, day_rows, seed, day, gz)
        paths.append(path)
    return paths


def _parse(path: Path) -> list[list[str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        text = fh.read()
    assert text.endswith("\n") and "\r" not in text
    return [line.split("\t") for line in text[:-1].split("\n")]


def test_raw_layout(tmp_path: Path) -> None:
    (path,) = _write(tmp_path, 5000, 1)
    rows = _parse(path)
    assert len(rows) == 5000
    assert {len(r) for r in rows} == {40}
    labels = np.array([int(r[0]) for r in rows])
    assert set(labels) == {0, 1}
    dense_missing = np.zeros(13)
    for r in rows:
        for j, field in enumerate(r[1:14]):
            if field == "":
                dense_missing[j] += 1
            else:
                value = int(field)  # raises on anything but an integer
                assert value >= 0 or j == synth.NEGATIVE_COLUMN
        for field in r[14:]:
            assert field == "" or HEX.match(field), field
    assert any(r[1 + synth.NEGATIVE_COLUMN].startswith("-") for r in rows)
    assert (dense_missing > 0).all() and (dense_missing / len(rows) < 0.6).all()
    assert 0.15 < labels.mean() < 0.35


def test_deterministic_for_a_seed(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", 3000, 2, seed=7)
    b = _write(tmp_path / "b", 3000, 2, seed=7)
    c = _write(tmp_path / "c", 3000, 2, seed=8)
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
    assert a[0].read_bytes() != c[0].read_bytes()
    assert a[0].read_bytes() != a[1].read_bytes()  # days are different draws


def test_days_and_gzip(tmp_path: Path) -> None:
    plain = _write(tmp_path / "plain", 1001, 3)
    gz = _write(tmp_path / "gz", 1001, 3, gz=True)
    assert [len(_parse(p)) for p in plain] == [334, 334, 333]
    assert [_parse(p) for p in plain] == [_parse(p) for p in gz]


def _value_log_odds(rows: list[list[str]], labels: np.ndarray, prior: float = 20.0) -> list[dict[str, float]]:
    """Per categorical value, the smoothed log-odds of a click: a naive-Bayes learner that any correct trainer beats."""
    base = labels.mean()
    tables = []
    for col in range(14, 40):
        clicks: dict[str, float] = {}
        counts: dict[str, float] = {}
        for r, y in zip(rows, labels):
            clicks[r[col]] = clicks.get(r[col], 0.0) + y
            counts[r[col]] = counts.get(r[col], 0.0) + 1
        tables.append({
            v: float(np.log((clicks[v] + prior * base) / (counts[v] - clicks[v] + prior * (1 - base))))
            for v in counts
        })
    return tables


def _score(rows: list[list[str]], tables: list[dict[str, float]]) -> np.ndarray:
    return np.array([sum(t.get(r[14 + i], 0.0) for i, t in enumerate(tables)) for r in rows])


def test_labels_are_learnable_and_not_by_a_broken_learner(tmp_path: Path) -> None:
    model = synth.build_hidden_model(0)
    table, logits = synth.generate_chunk(model, 20_000, np.random.default_rng(3))
    labels = torch.tensor(table["label"].to_numpy())
    assert auroc(torch.tensor(logits), labels, task="binary").item() > 0.85  # the Bayes-optimal AUC

    train_path, test_path = _write(tmp_path, 40_000, 2)
    train, test = _parse(train_path), _parse(test_path)
    train_labels = np.array([int(r[0]) for r in train], dtype=float)
    test_labels = torch.tensor([int(r[0]) for r in test])
    learned = _score(test, _value_log_odds(train, train_labels))
    assert auroc(torch.tensor(learned), test_labels, task="binary").item() > 0.70
    shuffled = np.random.default_rng(0).permutation(train_labels)
    broken = _score(test, _value_log_odds(train, shuffled))
    assert auroc(torch.tensor(broken), test_labels, task="binary").item() < 0.56


def test_cli_rejects_bad_counts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    synth.add_arguments(parser)
    assert synth.run(parser.parse_args(["--rows", "0", "--out", str(tmp_path)])) == 2
    assert "--rows" in capsys.readouterr().err
