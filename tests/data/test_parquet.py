"""Values and bytes are checked before training sees them: ids outside the table, non-finite dense features,
labels other than 0/1, the unlabeled split, and shards whose bytes changed after prep. Each refusal names the
shard, row group and column; ``data.check_values`` / ``data.verify`` turn the checks off."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from dlrm_scale.data.columns import DataValueError
from dlrm_scale.data.loader import make_loader
from dlrm_scale.data.manifest import Manifest, ManifestError, sha256_file
from dlrm_scale.data.parquet import ChecksumError
from tests.data.shards import CARD, write_dataset
from tests.data.shards import data_config as _data_config
from tests.dist_utils import REPO


def data_config(root: Path, **overrides):
    return _data_config(root, train_split="train", eval_split="", **overrides)


def _read_all(root: Path, split: str = "train", train: bool = True, **overrides) -> int:
    loader = make_loader(data_config(root, **overrides), split=split, batch_size=16, rank=0, world_size=1, seed=0,
                         train=train, device=torch.device("cpu"))
    return sum(int(batch.mask.sum()) for batch in loader)


def _rewrite(root: Path, shard: int, group: int, column: str, change: Callable[[np.ndarray], None], *,
             update_manifest: bool = True) -> Path:
    """Changes ``column`` in row group ``group`` of train shard ``shard`` (``change`` edits a numpy copy in place),
    keeping the row-group layout; with ``update_manifest`` the manifest's sha256 follows, so only the value
    checks can notice."""
    manifest = Manifest.load(root)
    entry = manifest.splits["train"].shards[shard]
    path = root / entry.path
    source = pq.ParquetFile(path)
    groups = [source.read_row_group(i) for i in range(source.num_row_groups)]
    table = groups[group]
    values = table.column(column).to_numpy().copy()
    change(values)
    groups[group] = table.set_column(table.schema.get_field_index(column), column,
                                     pa.array(values, type=table.schema.field(column).type))
    with pq.ParquetWriter(path, groups[0].schema) as writer:
        for part in groups:
            writer.write_table(part, row_group_size=max(part.num_rows, 1))
    if update_manifest:
        entry.sha256 = sha256_file(path)
        manifest.save(root)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write_dataset(tmp_path, {"train": [[20, 30], [25]], "val": [[10]]})
    return tmp_path


def _set_row(row: int, value) -> Callable[[np.ndarray], None]:
    def change(values: np.ndarray) -> None:
        values[row] = value

    return change


@pytest.mark.parametrize(("column", "value", "message"), [
    ("C3", CARD, rf"column C3 row 7 has id {CARD}, outside \[0, {CARD}\)"),
    ("C3", -1, rf"column C3 row 7 has id -1, outside \[0, {CARD}\)"),
    ("I5", np.nan, "column I5 row 7 is nan; dense features must be finite"),
    ("I5", -np.inf, "column I5 row 7 is -inf; dense features must be finite"),
    ("label", 2, "column label row 7 is 2, not 0 or 1"),
])
def test_bad_values_are_refused_naming_shard_group_and_column(root: Path, column: str, value, message: str) -> None:
    path = _rewrite(root, 0, 1, column, _set_row(7, value))
    with pytest.raises(DataValueError, match=rf"{path} row group 1: {message}") as info:
        _read_all(root)
    assert "\n" not in str(info.value)
    assert _read_all(root, check_values=False) == 75  # the check, and only it, refused the rows


def test_multi_hot_id_outside_the_table(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": [[12]]}, multi_hot=True)
    manifest = Manifest.load(tmp_path)
    path = tmp_path / manifest.splits["train"].shards[0].path
    table = pq.read_table(path)
    column = table.column("C2").combine_chunks()
    values = column.values.to_numpy().copy()
    values[3] = CARD + 5
    bad = pa.ListArray.from_arrays(column.offsets, pa.array(values))
    pq.write_table(table.set_column(table.schema.get_field_index("C2"), "C2", bad), path)
    manifest.splits["train"].shards[0].sha256 = sha256_file(path)
    manifest.save(tmp_path)
    with pytest.raises(DataValueError, match=rf"row group 0: column C2 row \d+ has id {CARD + 5}"):
        _read_all(tmp_path, multi_hot_sizes=[3] * 26)


def test_unlabeled_split_is_scored_but_never_trained_on(tmp_path: Path) -> None:
    write_dataset(tmp_path, {"train": [[10]], "unlabeled": [[12]]})
    manifest = Manifest.load(tmp_path)
    entry = manifest.splits["unlabeled"].shards[0]
    table = pq.read_table(tmp_path / entry.path)
    table = table.set_column(0, "label", pa.array(np.full(12, -1, np.int8)))
    pq.write_table(table, tmp_path / entry.path)
    entry.sha256 = sha256_file(tmp_path / entry.path)
    manifest.extra["unlabeled_label"] = -1
    manifest.save(tmp_path)
    with pytest.raises(ManifestError, match="split 'unlabeled' .* can be scored but not trained on"):
        _read_all(tmp_path, split="unlabeled", train=True)
    assert _read_all(tmp_path, split="unlabeled", train=False) == 12


def test_tampered_shard_is_refused_by_checksum(root: Path) -> None:
    path = _rewrite(root, 1, 0, "label", lambda labels: np.subtract(1, labels, out=labels), update_manifest=False)
    with pytest.raises(ChecksumError, match=rf"{path}: sha256 .* does not match the manifest's"):
        _read_all(root)
    assert _read_all(root, verify=False) == 75


def test_training_on_bad_data_is_one_line_and_status_2(root: Path, tmp_path: Path) -> None:
    """The CLI path end to end: before, a tampered shard trained to the end with exit 0."""
    path = _rewrite(root, 0, 0, "label", lambda labels: np.subtract(1, labels, out=labels), update_manifest=False)
    settings = [f"data.path={root}", "data.eval_split=", "data.encoding=hash", f"data.max_ind_range={CARD}",
                "data.dense_transform=log1p", "data.cardinalities=[]", "train.batch_size=16", "train.epochs=1",
                "train.progress=false", f"train.out_dir={tmp_path / 'run'}", "model.embedding_dim=4",
                "model.bottom_mlp=[8,4]", "model.top_mlp=[8,1]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    proc = subprocess.run([sys.executable, "-m", "dlrm_scale.cli", "train", "--config", "tiny_cpu",
                           *[a for s in settings for a in ("--set", s)]], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(f"dlrm-scale train: error: {path}: sha256")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
