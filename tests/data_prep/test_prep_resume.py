"""Resuming after kill -9, identical output for any number of workers or ranks, and refusing mixed settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep.state import State
from dlrm_scale.data.manifest import Manifest
from tests.data_prep.raw import prep, random_lines, write_lines
from tests.dist_utils import REPO

SHARDING = ["--rows-per-shard", "1500", "--row-group-rows", "500", "--chunk-bytes", "1000000"]


@pytest.fixture(scope="module")
def big_days(tmp_path_factory) -> list[Path]:
    """~36k rows over three days (one gzipped), plain days cut in ~3 chunks: enough for a kill to land mid-run."""
    root = tmp_path_factory.mktemp("big")
    base = random_lines(4000, seed=31)
    return [write_lines(root / f"day_{day}", base[day * 100:] * 3 + base[:day * 100], gz=day == 1) for day in range(3)]


def _command(days: list[Path], out: Path, encoding: str, workers: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dlrm_scale.cli", "prep", "criteo", "--input", *map(str, days), "--out", str(out),
            "--dataset", "terabyte", "--encoding", encoding, "--max-ind-range", "5000", "--workers", str(workers),
            "--no-progress", *SHARDING, *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, big_days):
    """Uninterrupted runs (2 workers, in a subprocess) to compare with, one per encoding, made on first use."""
    outputs = {}

    def get(encoding: str) -> Path:
        if encoding not in outputs:
            out = tmp_path_factory.mktemp("reference") / encoding
            subprocess.run(_command(big_days, out, encoding, 2), cwd=REPO, check=True, capture_output=True)
            outputs[encoding] = out
        return outputs[encoding]

    return get


def _shards(out: Path) -> dict[str, bytes]:
    manifest = Manifest.load(out)
    return {s.path: (out / s.path).read_bytes() for split in manifest.splits.values() for s in split.shards}


def _journaled(out: Path) -> list[str]:
    records = []
    for journal in sorted((out / ".prep" / "convert").glob("*.jsonl")):
        records += [line.split('"path": "')[1].split('"')[0] for line in journal.read_text().splitlines()
                    if line.endswith("}")]
    return records


def _kill_when(process: subprocess.Popen, ready) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        assert process.poll() is None, "the run ended before it could be killed; give it more input"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.multiproc
@pytest.mark.parametrize("encoding,phase,count", [("hash", "convert", 1), ("hash", "convert", 6), ("vocab", "count", 1)])
def test_resume_after_sigkill(tmp_path, big_days, reference, encoding, phase, count) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(_command(big_days, out, encoding, 2), cwd=REPO, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if phase == "convert":
        _kill_when(process, lambda: len(_journaled(out)) >= count)
    else:
        _kill_when(process, lambda: len(list((out / ".prep" / "counts").glob("*.json"))) >= count)
    assert not (out / "manifest.json").exists()
    finished = {path: os.stat(out / path) for path in _journaled(out)}

    rerun = subprocess.run(_command(big_days, out, encoding, 1), cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert _shards(out) == _shards(reference(encoding))
    assert Manifest.load(out).splits == Manifest.load(reference(encoding)).splits
    for path, before in finished.items():  # shards finished before the kill were not written again
        after = os.stat(out / path)
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [p for p in out.rglob("*.tmp")]


@pytest.mark.multiproc
@pytest.mark.parametrize("encoding", ["hash", "vocab"])
def test_same_output_for_any_workers_and_block_size(tmp_path, big_days, reference, encoding) -> None:
    out = tmp_path / "out"
    assert prep("--input", *big_days, "--out", out, "--dataset", "terabyte", "--encoding", encoding,
                "--max-ind-range", "5000", "--workers", "1", "--block-bytes", "65536", *SHARDING) == 0
    assert _shards(out) == _shards(reference(encoding))
    assert Manifest.load(out).cardinalities == Manifest.load(reference(encoding)).cardinalities
    if encoding == "vocab":
        for column in ("C1", "C26"):
            for name in ("values.npy", "counts.npy"):
                assert (out / "vocab" / column / name).read_bytes() == \
                    (reference(encoding) / "vocab" / column / name).read_bytes()


@pytest.mark.multiproc
def test_two_ranks_share_the_work(tmp_path, big_days, reference) -> None:
    shared = tmp_path / "shared"
    ranks = [subprocess.Popen(_command(big_days, shared, "vocab", 1, "--rank", str(rank), "--world-size", "2"),
                              cwd=REPO, stderr=subprocess.PIPE, text=True) for rank in (0, 1)]
    errors = [p.communicate(timeout=300)[1] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], errors
    assert "rank 0 writes the manifest" in errors[1]
    assert _shards(shared) == _shards(reference("vocab"))


def test_rerun_same_and_different_settings(tmp_path, capsys) -> None:
    path = write_lines(tmp_path / "day_0", random_lines(300, seed=1))
    out = tmp_path / "out"
    args = ["--input", path, "--out", out, "--max-ind-range", "1000", "--workers", "1"]
    assert prep(*args) == 0
    before = {p: os.stat(p).st_mtime_ns for p in out.rglob("*.parquet")}
    manifest = (out / "manifest.json").read_text()
    assert prep(*args) == 0  # a finished run is left as it is
    assert {p: os.stat(p).st_mtime_ns for p in out.rglob("*.parquet")} == before
    assert (out / "manifest.json").read_text() == manifest
    capsys.readouterr()
    assert prep(*args[:-4], "--max-ind-range", "2000", "--encoding", "vocab", "--workers", "1") == 2
    err = capsys.readouterr().err
    assert "max_ind_range: 1000 then, 2000 now" in err and "encoding: 'hash' then, 'vocab' now" in err

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert prep("--input", path, "--out", foreign) == 2
    assert "not empty and not written by `dlrm-scale prep`" in capsys.readouterr().err


def test_error_then_skip_resumes(tmp_path) -> None:
    lines = random_lines(400, seed=2)
    lines[350] = lines[350].replace("\t", "\t\t", 1)
    good = write_lines(tmp_path / "day_0", random_lines(300, seed=3))
    bad = write_lines(tmp_path / "day_1", lines)
    out = tmp_path / "out"
    args = ["--input", good, bad, "--out", out, "--workers", "1"]
    assert prep(*args) == 2
    assert prep(*args, "--on-bad-line", "skip") == 0
    manifest = Manifest.load(out)
    assert manifest.bad_lines_skipped == 1 and manifest.splits["train"].rows == 699


def test_cli_imports_nothing_heavy() -> None:
    code = ("import argparse, sys, data_prep.cli as c; p = argparse.ArgumentParser(); c.add_arguments(p); "
            "p.parse_args(['--input', 'x', '--out', 'y']); "
            "print(sorted(m for m in ('torch', 'torchrec', 'pyarrow') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
    helptext = subprocess.run([str(REPO / ".venv" / "bin" / "dlrm-scale"), "prep", "criteo", "--help"], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout
    for flag in ("--input", "--out", "--dataset", "--encoding", "--max-ind-range", "--min-frequency",
                 "--dense-transform", "--on-bad-line", "--workers", "--rows-per-shard", "--first-half"):
        assert flag in helptext


def test_one_run_per_rank_at_a_time(tmp_path, capsys) -> None:
    path = write_lines(tmp_path / "day_0", random_lines(20, seed=1))
    out = tmp_path / "out"
    with State(out).lock(0):  # as if another run of rank 0 were writing here
        assert prep("--input", path, "--out", out) == 2
        assert "another `dlrm-scale prep` (rank 0) is writing here" in capsys.readouterr().err
    assert prep("--input", path, "--out", out) == 0
