"""Our ``hash`` output equals TorchRec's own Criteo conversion (``BinaryCriteoUtils.tsv_to_npys``) on the same file.

TorchRec keeps raw ids (``int(v or "0", 16)``) and takes ``% num_embeddings`` when it loads them; we take
``% max_ind_range`` when we write. Its dense transform depends on the version: ``log(x + 3)`` up to torchrec 1.6,
``log(x - min + 2)`` (min over the whole file) after; both equal our ``log3`` on files whose minimum is -1, which
the synthetic file guarantees. On the real Kaggle sample (minimum -2) only labels and ids are compared.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.data_prep.raw import prep, random_lines, read_split, write_lines

pytestmark = pytest.mark.filterwarnings("ignore:Local function is not supported by pickle")


def _torchrec_npys(path: Path, tmp: Path, dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from torchrec.datasets.criteo import BinaryCriteoUtils

    dense, sparse, labels = tmp / "dense.npy", tmp / "sparse.npy", tmp / "labels.npy"
    BinaryCriteoUtils.tsv_to_npys(str(path), str(dense), str(sparse), str(labels), dataset_name=dataset)
    return np.load(labels).reshape(-1), np.load(dense), np.load(sparse)


def _compare(path: Path, tmp_path: Path, *, dataset: str, split: str, max_ind_range: int, dense: bool) -> None:
    out = tmp_path / f"out{max_ind_range}"
    assert prep("--input", path, "--out", out, "--encoding", "hash", "--max-ind-range", max_ind_range,
                "--dense-transform", "log3", "--block-bytes", "100000", "--workers", "1") == 0
    labels, our_dense, ids = read_split(out, split)
    ref_labels, ref_dense, ref_sparse = _torchrec_npys(path, tmp_path, dataset)
    assert len(labels) == len(ref_labels) > 0
    np.testing.assert_array_equal(labels.astype(np.int32), ref_labels)
    np.testing.assert_array_equal(ids, ref_sparse % max_ind_range if max_ind_range else ref_sparse)
    if dense:
        np.testing.assert_allclose(our_dense, ref_dense, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("max_ind_range", [0, 40_000_000, 1000])
def test_hash_equals_torchrec_synthetic(tmp_path, max_ind_range) -> None:
    lines = random_lines(600, seed=21, negatives=(-1,))
    path = write_lines(tmp_path / "day_0", lines)
    assert any(line.split("\t")[2] == "-1" for line in lines)  # the file minimum TorchRec's transform uses
    _compare(path, tmp_path, dataset="criteo_1tb", split="train", max_ind_range=max_ind_range, dense=True)


@pytest.mark.parametrize("name,split,dense", [
    ("PaddleRec__part-0", "train", True),  # minimum -1
    ("DERIVED_kaggle-2014-criteo__train.tiny.raw.tsv", "train", False),
    ("DERIVED_kaggle-2014-criteo__test.tiny.raw.tsv", "unlabeled", False),  # TorchRec labels Kaggle test rows -1
])
def test_hash_equals_torchrec_real(tmp_path, criteo_samples, name, split, dense) -> None:
    _compare(criteo_samples / name, tmp_path, dataset="criteo_kaggle", split=split, max_ind_range=10_000_000,
             dense=dense)
