"""The multi-hot fast path: materialized and on-the-fly batches are identical, equal to the reference expansion,
int32 KJTs; directories that break the contract fail in one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dlrm_scale.config import DataConfig
from dlrm_scale.data.loader import make_loader
from dlrm_scale.data.manifest import Manifest, ManifestError
from tests.data_prep.multihot_reference import SIZES, mh, prepared_one_hot, reference_tables
from tests.data_prep.raw import prep, random_lines, read_split, write_lines

pytestmark = pytest.mark.filterwarnings("ignore:Local function is not supported by pickle")


@pytest.fixture(scope="module")
def one_hot(tmp_path_factory) -> Path:
    return prepared_one_hot(tmp_path_factory.mktemp("onehot"))


@pytest.fixture(scope="module")
def multihot_dirs(one_hot, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mh")
    sizes = ",".join(map(str, SIZES))
    assert mh("--input", one_hot, "--out", root / "materialized", "--sizes", sizes, "--workers", "1") == 0
    assert mh("--input", one_hot, "--out", root / "expand", "--sizes", sizes, "--no-materialize") == 0
    return root / "materialized", root / "expand"


def _config(path: Path, **overrides) -> DataConfig:
    settings = dict(path=str(path), encoding="contiguous", max_ind_range=40, multi_hot_sizes=list(SIZES),
                    pin_memory=False, num_workers=2, shuffle_buffer_batches=2)
    return DataConfig(**{**settings, **overrides})


def _batches(path: Path, *, split: str = "train", train: bool = True, rank: int = 0, world_size: int = 2,
             batch_size: int = 64, **overrides) -> list:
    loader = make_loader(_config(path, **overrides), split=split, batch_size=batch_size, rank=rank,
                         world_size=world_size, seed=3, train=train, device="cpu")
    loader.set_epoch(1)
    return list(loader)


def test_materialized_and_expanded_batches_are_identical(multihot_dirs) -> None:
    materialized, expand = multihot_dirs
    for rank in (0, 1):
        ours, lazy = _batches(materialized, rank=rank), _batches(expand, rank=rank)
        assert len(ours) == len(lazy) > 2
        for a, b in zip(ours, lazy):
            assert a.sparse_features.values().dtype == torch.int32 == b.sparse_features.values().dtype
            assert a.sparse_features.lengths().dtype == torch.int32
            assert torch.equal(a.sparse_features.values(), b.sparse_features.values())
            assert torch.equal(a.sparse_features.lengths(), b.sparse_features.lengths())
            assert torch.equal(a.dense_features, b.dense_features) and torch.equal(a.labels, b.labels)
            assert torch.equal(a.mask, b.mask)
    assert ours[-1].mask.sum() < 64  # the last batch is padded, its padding rows carry no ids
    assert ours[-1].sparse_features.lengths().view(26, 64)[:, int(ours[-1].mask.sum()):].sum() == 0


def test_batches_equal_reference_expansion(multihot_dirs, one_hot) -> None:
    """Evaluation order (file order, one rank): every row's ids are the reference tables' rows."""
    materialized, _ = multihot_dirs
    rows = Manifest.load(materialized).cardinalities
    tables = reference_tables(rows, SIZES, "uniform")
    ids = read_split(one_hot, "val")[2]
    batches = _batches(materialized, split="val", train=False, world_size=1, batch_size=50)
    got = [[] for _ in SIZES]
    for batch in batches:
        real = int(batch.mask.sum())
        per_key = batch.sparse_features.to_dict()
        for f in range(len(SIZES)):
            got[f].append(per_key[f"C{f + 1}"].values().numpy().reshape(real, SIZES[f]))
    for f in range(len(SIZES)):
        np.testing.assert_array_equal(np.concatenate(got[f]), tables[f][ids[:, f] % rows[f]])


def test_mismatched_sizes_and_one_hot_shards_are_one_line_errors(multihot_dirs, tmp_path) -> None:
    materialized, expand = multihot_dirs
    with pytest.raises(ManifestError, match="differ from the data's"):
        _batches(materialized, multi_hot_sizes=[2] * 26)
    # a manifest that says materialized multi-hot over one-hot shards
    broken = tmp_path / "broken"
    shutil.copytree(expand, broken, symlinks=True)
    data = json.loads((broken / "manifest.json").read_text())
    data["extra"]["multihot"]["layout"] = "materialized"
    for split in data["splits"].values():
        for shard in split["shards"]:
            shard["path"] = str((expand / shard["path"]).resolve())
    (broken / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"column C1 has type int64; the manifest says 3 int32 ids per row"):
        _batches(broken)
    # ids beyond what the manifest allows
    data["extra"]["multihot"]["layout"] = "expand"
    data["extra"]["multihot"]["input_cardinalities"] = [2] * 26
    (broken / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=r"column C1 holds id \d+, outside \[0, 2\)"):
        _batches(broken)


def test_tampered_multihot_shards_are_refused_like_one_hot_ones(multihot_dirs, tmp_path) -> None:
    """The multi-hot source keeps the loader's boundary: the shard's sha256, labels 0/1, finite dense, and no
    training on the unlabeled split."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dlrm_scale.data.columns import DataValueError
    from dlrm_scale.data.parquet import ChecksumError

    materialized, _ = multihot_dirs
    tampered = tmp_path / "tampered"
    shutil.copytree(materialized, tampered)
    shard = tampered / Manifest.load(tampered).split("train").shards[0].path
    table = pq.read_table(shard)
    group_rows = pq.ParquetFile(shard).metadata.row_group(0).num_rows
    labels = table.column("label").to_numpy().copy()
    labels[3] = 2
    label_type = table.schema.field("label").type
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels, label_type))
    pq.write_table(table, shard, row_group_size=group_rows)
    with pytest.raises(ChecksumError, match="does not match the manifest"):
        _batches(tampered)
    with pytest.raises(DataValueError, match=r"column label row 3 is 2, not 0 or 1"):
        _batches(tampered, verify=False)
    assert _batches(tampered, verify=False, check_values=False)
    with pytest.raises(ManifestError, match="can be scored but not trained on"):
        _batches(materialized, split="unlabeled")


@pytest.fixture(scope="module")
def mlperf_sample(tmp_path_factory) -> Path:
    """Three days prepared as MLPerf DLRMv2 is (contiguous ids, log3, first half of the last day = val), then
    expanded with MLPerf's sizes: the tables are the data's own (small) cardinalities."""
    root = tmp_path_factory.mktemp("mlperf")
    lines = random_lines(900, seed=11)
    days = [write_lines(root / f"day_{d}", lines[d * 300:(d + 1) * 300]) for d in range(3)]
    assert prep("--input", *days, "--out", root / "onehot", "--dataset", "terabyte", "--encoding", "contiguous",
                "--dense-transform", "log3", "--first-half", "val", "--rows-per-shard", "200", "--row-group-rows",
                "100", "--workers", "1") == 0
    for layout in ("materialized", "expand"):
        assert mh("--input", root / "onehot", "--out", root / layout, "--sizes", "mlperf", "--workers", "1",
                  *(["--no-materialize"] if layout == "expand" else [])) == 0
    return root


def _train_mlperf(data: Path, out: Path) -> list[dict]:
    """``dlrm-scale train --config mlperf_dcnv2`` on 2 ranks over ``data``; the run's metrics records."""
    from tests.dist_utils import run_torchrun

    cards = json.loads((data / "manifest.json").read_text())["cardinalities"]
    settings = [f"data.path={data}", "data.encoding=contiguous", "data.max_ind_range=0",
                f"data.cardinalities={json.dumps(cards).replace(' ', '')}", "train.global_batch_size=128",
                "train.bf16=false", "train.eval_every_steps=3", f"train.out_dir={out}", "train.progress=false",
                "train.log_every_steps=1"]
    run_torchrun(["-m", "dlrm_scale.cli", "train", "--config", "mlperf_dcnv2",
                  *[arg for setting in settings for arg in ("--set", setting)]], nproc=2)
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.multiproc
def test_mlperf_preset_trains_from_multihot_directory(mlperf_sample, tmp_path) -> None:
    records = _train_mlperf(mlperf_sample / "materialized", tmp_path / "run")
    train = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(train) == 5 and all(np.isfinite(r["loss"]) for r in train)  # 600 rows, 2 ranks x 64
    assert evals and all(r["rows"] == 150 and r["split"] == "val" for r in evals)
    manifest = Manifest.load(mlperf_sample / "materialized")
    assert len(set(manifest.cardinalities)) > 5  # scaled, per-feature table sizes


@pytest.mark.multiproc
@pytest.mark.slow
def test_mlperf_training_is_the_same_on_expanded_data(mlperf_sample, tmp_path) -> None:
    materialized = _train_mlperf(mlperf_sample / "materialized", tmp_path / "a")
    expanded = _train_mlperf(mlperf_sample / "expand", tmp_path / "b")
    losses = [[r.get("loss", r.get("auc")) for r in run if r["kind"] in ("train", "eval")]
              for run in (materialized, expanded)]
    assert losses[0] == losses[1]
