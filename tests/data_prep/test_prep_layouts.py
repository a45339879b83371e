"""Input layouts (raw TSV, CSV with header/Id/CRLF/float-printed ints) and the real Criteo samples."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dlrm_scale.data.manifest import Manifest
from tests.data_prep.raw import (
    DENSE,
    SPARSE,
    assert_rows_equal,
    prep,
    random_lines,
    read_split,
    reference,
    split_fields,
    write_lines,
)

HEADER = ["label", *DENSE, *SPARSE]


def _as_csv(lines: list[str], *, ids: bool, floats: bool) -> list[str]:
    out = []
    for number, line in enumerate(lines):
        fields = line.split("\t")
        if floats:  # like the DeepCTR sample: integers printed as 260.0
            fields[1:14] = [f"{float(v)}" if v else "" for v in fields[1:14]]
        out.append(",".join(([str(10_000_000 + number)] if ids else []) + fields))
    return out


@pytest.mark.parametrize("ids,floats,newline,gz", [(True, False, "\r\n", False), (False, True, "\n", False),
                                                   (True, True, "\r\n", True)])
def test_csv_layouts_equal_tsv(tmp_path, ids, floats, newline, gz) -> None:
    lines = random_lines(400, seed=8)
    header = ",".join((["Id"] if ids else []) + ["Label" if ids else "label", *DENSE, *SPARSE])
    path = write_lines(tmp_path / "train.csv", _as_csv(lines, ids=ids, floats=floats), newline=newline, header=header,
                       gz=gz)
    out = tmp_path / "out"
    assert prep("--input", path, "--out", out, "--block-bytes", "3000", "--chunk-bytes", "20000",
                "--workers", "1") == 0
    assert_rows_equal(read_split(out, "train"), reference(split_fields(lines), labeled=True))
    assert Manifest.load(out).extra["input_formats"][str(path.resolve())] == "csv+header" + ("+gzip" if gz else "")


def test_header_columns_in_any_order(tmp_path) -> None:
    lines = random_lines(50, seed=6)
    order = list(reversed(HEADER))
    shuffled = ["\t".join(reversed(line.split("\t"))) for line in lines]
    out = tmp_path / "out"
    assert prep("--input", write_lines(tmp_path / "r.tsv", shuffled, header="\t".join(order)), "--out", out,
                "--workers", "1") == 0
    assert_rows_equal(read_split(out, "train"), reference(split_fields(lines), labeled=True))


def test_format_flag_forces_delimiter(tmp_path, capsys) -> None:
    path = write_lines(tmp_path / "day_0", random_lines(10, seed=1))
    assert prep("--input", path, "--out", tmp_path / "out", "--format", "csv") == 2
    assert "of 10 sampled lines, 10 lines with 1 comma-separated fields" in capsys.readouterr().err


# --- the real samples (internal use only; skipped when absent) ---------------------------------------------------

def _read_real(path: Path) -> tuple[list[list[str]], bool]:
    """Rows as raw-layout field lists (label first when labeled), read with the csv module."""
    with open(path, newline="") as handle:
        first = handle.readline()
    delimiter = "\t" if "\t" in first else ","
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle, delimiter=delimiter))
    if not rows[0][0].strip() or rows[0][0].lstrip("-").isdigit():
        return rows, len(rows[0]) == 40
    names = [name.lower() for name in rows[0]]
    wanted = [n for n in ["label", *(c.lower() for c in DENSE + SPARSE)] if n in names]
    return [[row[names.index(n)] for n in wanted] for row in rows[1:]], "label" in names


REAL = ["PaddleRec__part-0", "DERIVED_kaggle-2014-criteo__train.tiny.raw.tsv",
        "DERIVED_kaggle-2014-criteo__test.tiny.raw.tsv", "DERIVED_glc_pagerank_benchmark__criteo_terabyte_first5rows.tsv",
        "kaggle-2014-criteo__train.tiny.csv", "kaggle-2014-criteo__test.tiny.csv", "DeepCTR__criteo_sample.txt",
        "torch-rechub__criteo_sample.csv"]


@pytest.mark.parametrize("name", REAL)
@pytest.mark.parametrize("transform", ["log1p", "log3"])
def test_real_sample_roundtrip(tmp_path, criteo_samples, name, transform) -> None:
    path = criteo_samples / name
    rows, labeled = _read_real(path)
    out = tmp_path / "out"
    assert prep("--input", path, "--out", out, "--dense-transform", transform, "--max-ind-range", "100000",
                "--block-bytes", "50000", "--workers", "1") == 0
    split = "train" if labeled else "unlabeled"
    assert_rows_equal(read_split(out, split), reference(rows, labeled=labeled, transform=transform,
                                                        max_ind_range=100_000))
    assert Manifest.load(out).splits[split].rows == len(rows)


def test_real_kaggle_csv_equals_raw_tsv(tmp_path, criteo_samples) -> None:
    """The competition CSV (Id column, CRLF) and the tarball's TSV hold the same rows: same shards content."""
    outs = []
    for name in ["kaggle-2014-criteo__train.tiny.csv", "DERIVED_kaggle-2014-criteo__train.tiny.raw.tsv"]:
        out = tmp_path / name
        assert prep("--input", criteo_samples / name, "--out", out, "--dataset", "kaggle", "--workers", "1") == 0
        outs.append(out)
    for split in ("train", "val", "test"):
        a, b = read_split(outs[0], split), read_split(outs[1], split)
        assert len(a[0]) > 0
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
