"""``--encoding contiguous`` equals TorchRec's ``tsv_to_npys`` + ``sparse_to_contiguous(frequency_threshold=0)``
over several days, for any chunking, worker count or interruption, then takes the optional cap."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from data_prep import contiguous
from dlrm_scale.data.manifest import Manifest
from tests.data_prep.raw import prep, random_lines, read_split, write_lines
from tests.dist_utils import REPO

pytestmark = pytest.mark.filterwarnings("ignore:Local function is not supported by pickle")
SMALL_CHUNKS = ["--chunk-bytes", "20000", "--block-bytes", "7000", "--rows-per-shard", "400", "--row-group-rows",
                "100"]


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> list[Path]:
    """Three days drawn from one distribution (so values recur across days), each cut into several chunks."""
    root = tmp_path_factory.mktemp("days")
    lines = random_lines(1500, seed=5)
    return [write_lines(root / f"day_{d}", lines[d * 500:(d + 1) * 500]) for d in range(3)]


@pytest.fixture(scope="module")
def torchrec_ids(days, tmp_path_factory) -> np.ndarray:
    """TorchRec's contiguous ids of every row, days in order: ``(N, 26) int64``."""
    from torchrec.datasets.criteo import BinaryCriteoUtils

    root = tmp_path_factory.mktemp("torchrec")
    sparse_files = []
    for path in days:
        names = [root / f"{path.name}_{kind}.npy" for kind in ("dense", "sparse", "labels")]
        BinaryCriteoUtils.tsv_to_npys(str(path), *map(str, names), dataset_name="criteo_1tb")
        sparse_files.append(str(names[1]))
    BinaryCriteoUtils.sparse_to_contiguous(sparse_files, str(root), frequency_threshold=0)
    return np.concatenate([np.load(root / f"{path.name}_sparse_contig_freq.npy") for path in days])


def _all_rows(out: Path) -> np.ndarray:
    """Ids of every split in input order: train (day_0, day_1), then day_2's halves (test first)."""
    return np.concatenate([read_split(out, split)[2] for split in ("train", "test", "val")])


@pytest.mark.parametrize("max_ind_range,workers", [(0, 2), (60, 1)])
def test_contiguous_equals_torchrec(tmp_path, days, torchrec_ids, max_ind_range, workers) -> None:
    out = tmp_path / "out"
    shuffled = [days[2], days[0], days[1]]  # --dataset terabyte orders day_N by N
    assert prep("--input", *shuffled, "--out", out, "--dataset", "terabyte", "--encoding", "contiguous",
                "--max-ind-range", max_ind_range, "--workers", workers, *SMALL_CHUNKS) == 0
    ids = _all_rows(out)
    assert len(ids) == len(torchrec_ids) == 1500
    assert torchrec_ids.min() == contiguous.FIRST_ID
    expected = torchrec_ids % max_ind_range if max_ind_range else torchrec_ids
    np.testing.assert_array_equal(ids, expected)
    manifest = Manifest.load(out)
    sizes = torchrec_ids.max(axis=0) + 1
    assert manifest.cardinalities == (np.minimum(sizes, max_ind_range) if max_ind_range else sizes).tolist()
    assert manifest.encoding == "contiguous" and manifest.extra["contiguous_dir"] == "contiguous"
    assert len(list((out / ".prep" / "first").glob("*.npz"))) > 3  # several chunks per day were merged


def test_merge_numbers_by_first_appearance(tmp_path, monkeypatch) -> None:
    """Pass 1 and the merge, with folding forced at every step, against a dict numbering the values in order."""
    monkeypatch.setattr(contiguous, "_FOLD_ENTRIES", 3)
    rng = np.random.default_rng(3)
    chunks = [rng.integers(0, 40, (26, n)) * 7919 for n in (0, 50, 1, 120)]
    files = []
    for index, chunk in enumerate(chunks):
        seen = contiguous.FirstSeen()
        for start in range(0, chunk.shape[1], 17):  # blocks
            lines = np.arange(start, min(start + 17, chunk.shape[1]))
            for j in range(26):
                seen.add(j, chunk[j, lines], lines)
        files.append(tmp_path / f"{index}.npz")
        seen.save(files[-1])
    for j in (0, 25):
        numbered: dict[int, int] = {}
        for value in np.concatenate([c[j] for c in chunks]).tolist():
            numbered.setdefault(value, len(numbered) + contiguous.FIRST_ID)
        values = contiguous.merge_column(files, f"C{j + 1}")
        assert {int(v): i + contiguous.FIRST_ID for i, v in enumerate(values)} == numbered


@pytest.mark.multiproc
def test_resume_after_kill_in_first_seen_pass(tmp_path, days) -> None:
    """kill -9 once some chunks' first-seen results exist; the rerun reuses them and writes the same shards."""
    def command(out: Path, workers: int) -> list[str]:
        return [sys.executable, "-m", "dlrm_scale.cli", "prep", "criteo", "--input", *map(str, days), "--out",
                str(out), "--dataset", "terabyte", "--encoding", "contiguous", "--workers", str(workers),
                "--no-progress", *SMALL_CHUNKS]

    reference = tmp_path / "reference"
    subprocess.run(command(reference, 1), cwd=REPO, check=True, capture_output=True)
    out = tmp_path / "out"
    process = subprocess.Popen(command(out, 2), cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((out / ".prep" / "first").glob("*.json")):
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()
    subprocess.run(command(out, 1), cwd=REPO, check=True, capture_output=True)
    for split in ("train", "test", "val"):
        np.testing.assert_array_equal(read_split(out, split)[2], read_split(reference, split)[2])
    for name in ("C1", "C20"):
        assert (out / "contiguous" / name / "values.npy").read_bytes() == \
            (reference / "contiguous" / name / "values.npy").read_bytes()
