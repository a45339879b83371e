"""Raw logs -> shards -> rows: every line comes back exactly once, in its split, equal to a plain reference."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dlrm_scale.config import DataConfig
from dlrm_scale.data.manifest import Manifest, ManifestError, check_compatible
from tests.data_prep.raw import (
    assert_rows_equal,
    build_vocab,
    prep,
    random_lines,
    read_split,
    reference,
    split_fields,
    write_lines,
)

DAY_ROWS = (1500, 1200, 1301)


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> tuple[list[Path], list[list[str]]]:
    """Three days, the middle one gzipped, the last with an odd number of lines."""
    root = tmp_path_factory.mktemp("raw")
    paths, lines = [], []
    for day, rows in enumerate(DAY_ROWS):
        day_lines = random_lines(rows, seed=day)
        paths.append(write_lines(root / f"day_{day}", day_lines, gz=day == 1))
        lines.append(day_lines)
    return paths, lines


SMALL = ["--rows-per-shard", "500", "--row-group-rows", "128", "--block-bytes", "20000", "--chunk-bytes", "100000"]


@pytest.mark.parametrize("encoding,transform,max_ind_range,min_frequency", [
    ("hash", "log1p", 1000, 1),
    ("hash", "log3", 0, 1),
    ("vocab", "log1p", 0, 2),
    ("vocab", "log3", 50, 1),
])
def test_terabyte_roundtrip(tmp_path, days, encoding, transform, max_ind_range, min_frequency) -> None:
    paths, lines = days
    out = tmp_path / "out"
    assert prep("--input", *paths, "--out", out, "--dataset", "terabyte", "--encoding", encoding,
                "--max-ind-range", max_ind_range, "--min-frequency", min_frequency, "--dense-transform", transform,
                "--workers", "1", *SMALL) == 0
    fields = [split_fields(day) for day in lines]
    vocab = None
    if encoding == "vocab":
        every = [f for day in fields for f in day]
        vocab = build_vocab(every, labeled_offsets=[1] * len(every), max_ind_range=max_ind_range,
                            min_frequency=min_frequency)
    kwargs = dict(labeled=True, transform=transform, max_ind_range=max_ind_range, vocab=vocab)
    held = fields[2]
    first = math.ceil(len(held) / 2)
    assert_rows_equal(read_split(out, "train"), reference(fields[0] + fields[1], **kwargs))
    assert_rows_equal(read_split(out, "test"), reference(held[:first], **kwargs))
    assert_rows_equal(read_split(out, "val"), reference(held[first:], **kwargs))

    manifest = Manifest.load(out)
    assert manifest.encoding == encoding and manifest.dense_transform == transform
    assert manifest.max_ind_range == max_ind_range and manifest.min_frequency == min_frequency
    if encoding == "hash":
        assert manifest.cardinalities == [max_ind_range or 2**32] * 26
    else:
        assert manifest.cardinalities == [len(v) + 1 for v in vocab]
        for j, column in enumerate(manifest.sparse_columns):
            values = np.load(out / "vocab" / column / "values.npy")
            assert {int(v): i + 1 for i, v in enumerate(values)} == vocab[j]
    _, _, ids = read_split(out, "train")
    assert ids.min() >= 0 and (ids.max(axis=0) < np.array(manifest.cardinalities)).all()


def test_shards_and_manifest(tmp_path, days) -> None:
    paths, lines = days
    out = tmp_path / "out"
    assert prep("--input", *paths, "--out", out, "--dataset", "terabyte", "--max-ind-range", "997",
                "--workers", "1", *SMALL) == 0
    manifest = Manifest.load(out)
    assert list(manifest.splits) == ["train", "test", "val"]
    assert manifest.splits["train"].rows == DAY_ROWS[0] + DAY_ROWS[1]
    assert manifest.splits["test"].rows == math.ceil(DAY_ROWS[2] / 2)
    assert manifest.splits["val"].rows == DAY_ROWS[2] // 2
    assert manifest.bad_lines_skipped == 0 and manifest.quarantine == []
    for split in manifest.splits.values():
        for shard in split.shards:
            path = out / shard.path
            assert hashlib.sha256(path.read_bytes()).hexdigest() == shard.sha256
            metadata = pq.ParquetFile(path).metadata
            groups = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
            assert sum(groups) == shard.rows <= 500 and len(groups) == shard.row_groups
            assert all(g == 128 for g in groups[:-1]) and groups[-1] <= 128
    # several chunks per plain file (chunk-bytes 100 kB), one per gzip file; only each chunk's last shard is short
    train = [s.path for s in manifest.splits["train"].shards]
    assert len({p.split("-")[1] + p.split("-")[2] for p in train if "part-000" in p}) > 1
    assert len({p.split("-")[2] for p in train if "part-001" in p}) == 1
    for source, path in zip(manifest.sources, paths):
        assert source.path == str(path.resolve())
        assert source.bytes == path.stat().st_size
        assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    schema = pq.read_schema(out / manifest.splits["val"].shards[0].path)
    assert [f.name for f in schema] == ["label", *manifest.dense_columns, *manifest.sparse_columns]
    assert [str(f.type) for f in schema][:2] == ["int8", "float"] and str(schema.field("C26").type) == "int64"

    matching = DataConfig(path=str(out), encoding="hash", max_ind_range=997, dense_transform="log1p")
    assert check_compatible(manifest, matching) == [997] * 26
    with pytest.raises(ManifestError, match="dense_transform"):
        check_compatible(manifest, DataConfig(path=str(out), max_ind_range=997, dense_transform="log3"))


@pytest.mark.parametrize("first_half", ["test", "val"])
def test_kaggle_last_seventh(tmp_path, first_half) -> None:
    lines = random_lines(703, seed=7)
    path = write_lines(tmp_path / "train.txt", lines)
    out = tmp_path / "out"
    assert prep("--input", path, "--out", out, "--dataset", "kaggle", "--first-half", first_half,
                "--chunk-bytes", "30000", "--workers", "1") == 0
    fields = split_fields(lines)
    held = 703 // 7  # facebookresearch/dlrm: divmod into 7 parts, the first 703 % 7 one longer; the last held out
    start, middle = 703 - held, 703 - held + math.ceil(held / 2)
    other = "val" if first_half == "test" else "test"
    assert_rows_equal(read_split(out, "train"), reference(fields[:start], labeled=True))
    assert_rows_equal(read_split(out, first_half), reference(fields[start:middle], labeled=True))
    assert_rows_equal(read_split(out, other), reference(fields[middle:], labeled=True))


def test_terabyte_orders_days_by_number(tmp_path) -> None:
    """The shell sorts day_10 before day_2; the held-out day is still the highest."""
    names = ["day_1", "day_10", "day_2"]
    lines = {name: random_lines(40, seed=i) for i, name in enumerate(names)}
    paths = [write_lines(tmp_path / name, lines[name]) for name in names]
    out = tmp_path / "out"
    assert prep("--input", *paths, "--out", out, "--dataset", "terabyte", "--workers", "1") == 0
    train = split_fields(lines["day_1"] + lines["day_2"])
    assert_rows_equal(read_split(out, "train"), reference(train, labeled=True))
    assert_rows_equal(read_split(out, "test"), reference(split_fields(lines["day_10"][:20]), labeled=True))


def test_auto_single_file_is_train(tmp_path) -> None:
    lines = random_lines(300, seed=3)
    out = tmp_path / "out"
    assert prep("--input", write_lines(tmp_path / "x.tsv", lines), "--out", out, "--workers", "1") == 0
    manifest = Manifest.load(out)
    assert list(manifest.splits) == ["train"] and manifest.dataset == "auto"
    assert_rows_equal(read_split(out, "train"), reference(split_fields(lines), labeled=True))


def test_unlabeled_file(tmp_path) -> None:
    labeled, unlabeled = random_lines(200, seed=1), random_lines(150, seed=2, labeled=False)
    out = tmp_path / "out"
    assert prep("--input", write_lines(tmp_path / "train.txt", labeled), write_lines(tmp_path / "test.txt", unlabeled),
                "--out", out, "--dataset", "kaggle", "--workers", "1") == 0
    got = read_split(out, "unlabeled")
    assert (got[0] == -1).all()
    assert_rows_equal(got, reference(split_fields(unlabeled), labeled=False))
    assert Manifest.load(out).splits["train"].rows == 200 - 200 // 7
