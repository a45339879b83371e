"""``dlrm-scale prep multihot`` gives the ids of facebookresearch/dlrm's MLPerf DLRMv2 multi-hot materialization
(restated in ``tests/data_prep/multihot_reference.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep import multihot
from dlrm_scale.data.manifest import Manifest
from tests.data_prep.multihot_reference import SIZES, mh, prepared_one_hot, reference_tables
from tests.data_prep.raw import read_split

pytestmark = [pytest.mark.filterwarnings("ignore:Local function is not supported by pickle"),
              pytest.mark.filterwarnings("ignore:invalid value encountered in cast")]  # the reference's pareto
@pytest.mark.parametrize("distribution", ["uniform", "pareto"])
def test_tables_equal_reference_in_blocks(tmp_path, distribution) -> None:
    rows = [1, 40, 7, 300, 2, 65]
    sizes = [3, 1, 100, 2, 5, 1]
    columns = [f"C{j + 1}" for j in range(len(rows))]
    multihot.generate_tables(tmp_path, columns, rows, sizes, distribution, seed=0, block_ids=20)
    for column, expected in zip(columns, reference_tables(rows, sizes, distribution)):
        got = np.load(multihot.table_path(tmp_path, column))
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, expected)
    other = tmp_path / "seed1"
    multihot.generate_tables(other, columns, rows, sizes, distribution, seed=1)
    assert not np.array_equal(np.load(multihot.table_path(other, "C4")), reference_tables(rows, sizes,
                                                                                          distribution)[3])


@pytest.fixture(scope="module")
def one_hot(tmp_path_factory) -> Path:
    return prepared_one_hot(tmp_path_factory.mktemp("onehot"))


@pytest.mark.parametrize("distribution,rows", [("uniform", None), ("pareto", [17] * 26)])
def test_materialized_ids_equal_reference(tmp_path, one_hot, distribution, rows) -> None:
    out = tmp_path / "mh"
    args = ["--input", one_hot, "--out", out, "--sizes", ",".join(map(str, SIZES)), "--distribution", distribution,
            "--workers", "2"]
    assert mh(*args, *(["--num-embeddings", ",".join(map(str, rows))] if rows else [])) == 0
    source = Manifest.load(one_hot)
    manifest = Manifest.load(out)
    table_rows = rows or source.cardinalities
    tables = reference_tables(table_rows, SIZES, distribution)
    assert manifest.multi_hot and manifest.cardinalities == table_rows
    recorded = manifest.extra["multihot"]
    assert (recorded["sizes"], recorded["seed"], recorded["distribution"]) == (SIZES, 0, distribution)
    assert recorded["layout"] == "materialized"
    for split in ("train", "test", "val"):
        ids = read_split(one_hot, split)[2]
        got = pa.concat_tables(pq.read_table(out / s.path) for s in manifest.split(split).shards)
        assert got.num_rows == len(ids) > 0
        for j, size in enumerate(SIZES):
            column = got.column(f"C{j + 1}").combine_chunks()
            assert column.type == pa.binary(4 * size)
            expected = tables[j][ids[:, j] % table_rows[j]]
            got_ids = np.frombuffer(b"".join(column.to_pylist()), dtype="<i4").reshape(-1, size)
            np.testing.assert_array_equal(got_ids, expected)
        np.testing.assert_array_equal(got.column("label").to_numpy(), read_split(one_hot, split)[0])
        for shard, original in zip(manifest.split(split).shards, source.split(split).shards):
            assert shard.row_groups == original.row_groups and shard.rows == original.rows
    # a rerun finds everything done; other settings are refused
    assert mh(*args, *(["--num-embeddings", ",".join(map(str, rows))] if rows else [])) == 0
    assert mh(*args, "--seed", "1") == 1


def test_expand_layout_points_at_one_hot_shards(tmp_path, one_hot) -> None:
    out = tmp_path / "lazy"
    assert mh("--input", one_hot, "--out", out, "--sizes", ",".join(map(str, SIZES)), "--no-materialize") == 0
    manifest = Manifest.load(out)
    assert manifest.extra["multihot"]["layout"] == "expand"
    assert not list(out.rglob("*.parquet"))
    shard = manifest.split("train").shards[0]
    assert (out / shard.path).resolve() == (one_hot / Manifest.load(one_hot).split("train").shards[0].path).resolve()
    assert np.load(out / "multihot_tables" / "C21.npy", mmap_mode="r").shape == (manifest.cardinalities[20], 100)


def test_bad_input_is_one_line(tmp_path, one_hot, capsys) -> None:
    assert mh("--input", one_hot, "--out", tmp_path / "a", "--sizes", "1,2,3") == 1
    assert "--sizes needs 26 values" in capsys.readouterr().err
    materialized = tmp_path / "b"
    assert mh("--input", one_hot, "--out", materialized, "--sizes", "mlperf", "--num-embeddings",
              ",".join(["5"] * 26)) == 0
    assert mh("--input", materialized, "--out", tmp_path / "c", "--sizes", "mlperf") == 1
    assert "already multi-hot" in capsys.readouterr().err
    # ids beyond the manifest's cardinality: a hand-edited manifest that claims smaller tables
    edited = tmp_path / "edited"
    edited.mkdir()
    data = json.loads((one_hot / "manifest.json").read_text())
    data["cardinalities"] = [3] * 26
    for split in data["splits"].values():
        for shard in split["shards"]:
            shard["path"] = str(one_hot / shard["path"])
    (edited / "manifest.json").write_text(json.dumps(data))
    assert mh("--input", edited, "--out", tmp_path / "d", "--sizes", "mlperf", "--workers", "1") == 1
    err = capsys.readouterr().err
    assert "outside [0, 3) of the manifest" in err and len(err.strip().splitlines()) == 1


@pytest.mark.multiproc
def test_two_ranks_share_the_shards(tmp_path, one_hot) -> None:
    """Two ranks on one OUT (as torchx replicas on several machines): the same bytes as one process."""
    import subprocess
    import sys

    from tests.dist_utils import REPO

    def command(out: Path, *extra: str) -> list[str]:
        return [sys.executable, "-m", "dlrm_scale.cli", "prep", "multihot", "--input", str(one_hot), "--out",
                str(out), "--sizes", "mlperf", "--workers", "1", "--no-progress", *extra]

    subprocess.run(command(tmp_path / "one"), cwd=REPO, check=True, capture_output=True)
    ranks = [subprocess.Popen(command(tmp_path / "two", "--rank", str(r), "--world-size", "2"), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for r in range(2)]
    for process in ranks:
        assert process.wait(timeout=300) == 0, process.stderr.read()[-2000:]
    one, two = Manifest.load(tmp_path / "one"), Manifest.load(tmp_path / "two")
    assert one.splits == two.splits and len(one.split("train").shards) > 1
    for shard in one.split("train").shards:
        assert (tmp_path / "one" / shard.path).read_bytes() == (tmp_path / "two" / shard.path).read_bytes()
