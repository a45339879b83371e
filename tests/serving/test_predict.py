"""``dlrm-scale predict``: row alignment, the bad-line policy, several workers, resuming, and model directories
that are corrupt or mismatched (one line, exit status 2)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

from dlrm_scale.cli import main
from dlrm_scale.serving import predict as predict_module
from dlrm_scale.serving.artifact import MANIFEST_FILE, MODEL_FILE, sha256_file
from tests.data_prep.raw import random_lines, write_lines

pytestmark = pytest.mark.multiproc


def read_scores(path) -> dict[str, np.ndarray]:
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def test_bad_lines_stop_or_leave_gaps_in_the_row_ids(hash_model, hash_run, tmp_path, capsys):
    lines = hash_run.raw[0].read_text().splitlines()
    bad = {3: lines[3].replace("\t", "\tzz", 1)[:-1] + "q", 10: "only\tthree\tfields", 500: ""}
    edited = [bad.get(i, line) for i, line in enumerate(lines)]
    raw = write_lines(tmp_path / "with_bad.tsv", edited)
    out = tmp_path / "scores.parquet"

    assert main(["predict", "--model", str(hash_model), "--input", str(raw), "--out", str(out), "--no-progress"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and f"{raw}:4:" in error[0] and "--on-bad-line skip" in error[0]

    assert main(["predict", "--model", str(hash_model), "--input", str(raw), "--out", str(out), "--no-progress",
                 "--on-bad-line", "skip"]) == 0
    scores = read_scores(out)
    good = [i for i in range(len(lines)) if i not in bad]
    assert scores["row"].tolist() == good
    clean = tmp_path / "clean.parquet"
    assert main(["predict", "--model", str(hash_model), "--input", str(hash_run.raw[0]), "--out", str(clean),
                 "--no-progress"]) == 0
    # other batches around the same rows: the MLPs' matmuls may round differently in the last bit
    np.testing.assert_allclose(scores["logit"], read_scores(clean)["logit"][good], rtol=0, atol=1e-6)
    listed = (tmp_path / "scores.parquet.bad_lines.tsv").read_text().splitlines()
    assert [int(line.split("\t")[1]) for line in listed[1:]] == sorted(bad)
    assert "3 fields" in listed[2]



def test_an_interrupted_predict_resumes_without_redoing_finished_tasks(hash_model, tmp_path, monkeypatch):
    raw = write_lines(tmp_path / "raw.tsv", random_lines(300, seed=5))
    out = tmp_path / "scores.parquet"
    args = ["predict", "--model", str(hash_model), "--input", str(raw), "--out", str(out), "--no-progress",
            "--chunk-bytes", "15000"]
    done = []
    real_run_task = predict_module.run_task

    def crash_after_two(task, **kwargs):
        if len(done) == 2:
            raise KeyboardInterrupt  # a kill between tasks
        done.append(task.name)
        return real_run_task(task, **kwargs)

    monkeypatch.setattr(predict_module, "run_task", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        main(args)
    parts = tmp_path / "scores.parquet.parts"
    finished = {path.stem: path.stat().st_mtime_ns for path in parts.glob("*.parquet")}
    assert len(finished) == 2 and not out.exists()

    redone = []
    monkeypatch.setattr(predict_module, "run_task", lambda task, **kw: redone.append(task.name) or
                        real_run_task(task, **kw))
    assert main(args) == 0
    assert redone and not set(redone) & set(finished)
    assert not parts.exists()
    resumed = read_scores(out)
    monkeypatch.setattr(predict_module, "run_task", real_run_task)
    assert main([*args[:6], str(tmp_path / "straight.parquet"), *args[7:]]) == 0
    straight = read_scores(tmp_path / "straight.parquet")
    np.testing.assert_array_equal(resumed["row"], np.arange(300))
    np.testing.assert_array_equal(resumed["logit"], straight["logit"])


def test_corrupt_or_mismatched_model_directories_are_one_line_errors(hash_model, tmp_path, capsys):
    raw = write_lines(tmp_path / "raw.tsv", random_lines(20, seed=1))

    def broken(name: str, damage) -> str:
        copy = tmp_path / name
        shutil.copytree(hash_model, copy)
        damage(copy)
        return str(copy)

    def flip_byte(directory):
        data = bytearray((directory / MODEL_FILE).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (directory / MODEL_FILE).write_bytes(bytes(data))

    def garbage_with_matching_checksum(directory):
        (directory / MODEL_FILE).write_bytes(b"not a zip archive")
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        manifest["files"][MODEL_FILE] = sha256_file(directory / MODEL_FILE)
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest))

    def other_encoding(directory):
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        manifest["encoding"] = "vocab"
        (directory / MANIFEST_FILE).write_text(json.dumps(manifest))

    cases = {
        "flipped": (broken("flipped", flip_byte), "sha256 differs"),
        "truncated_manifest": (broken("truncated", lambda d: (d / MANIFEST_FILE).write_text('{"format_')),
                               "not valid JSON"),
        "no_manifest": (broken("no_manifest", lambda d: (d / MANIFEST_FILE).unlink()), "no manifest.json"),
        "garbage": (broken("garbage", garbage_with_matching_checksum), "not a loadable TorchScript model"),
        "mismatch": (broken("mismatch", other_encoding), "does not match manifest.json (encoding)"),
        "missing": (str(tmp_path / "nowhere"), "no manifest.json"),
    }
    for name, (model_dir, message) in cases.items():
        status = main(["predict", "--model", model_dir, "--input", str(raw), "--out", str(tmp_path / f"{name}.pq"),
                       "--no-progress"])
        error = capsys.readouterr().err.strip().splitlines()
        assert status == 2, name
        assert len(error) == 1 and message in error[0], (name, error)


def test_prepared_shards_that_do_not_fit_the_model_are_one_line_errors(hash_model, hash_run, tmp_path, capsys):
    import pyarrow as pa

    shard = next((hash_run.data / "train").glob("*.parquet"))
    table = pq.read_table(shard)
    outside = tmp_path / "outside.parquet"
    pq.write_table(table.set_column(table.column_names.index("C1"), "C1",
                                    pa.array(np.full(table.num_rows, 300, np.int64))), outside)
    other = tmp_path / "other"
    shutil.copytree(hash_run.data, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["dense_transform"] = "log3"
    (other / "manifest.json").write_text(json.dumps(manifest))
    cases = [(outside, "outside [0, cardinality)"), (next((other / "train").glob("*.parquet")), "log3")]
    for path, message in cases:
        status = main(["predict", "--model", str(hash_model), "--input", str(path), "--out",
                       str(tmp_path / "s.parquet"), "--no-progress"])
        error = capsys.readouterr().err.strip().splitlines()
        assert status == 2 and len(error) == 1 and message in error[0], error


@pytest.mark.slow  # two spawned workers each import torch and torchrec: ~30 s on the 2-core VM
def test_several_workers_and_small_chunks_give_the_same_rows_and_scores(hash_model, hash_run, tmp_path):
    lines = hash_run.raw[0].read_text().splitlines()
    bad = {3, 10}
    edited = ["only\tthree\tfields" if i in bad else line for i, line in enumerate(lines)]
    raw = write_lines(tmp_path / "with_bad.tsv", edited)
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    common = ["--model", str(hash_model), "--no-progress", "--on-bad-line", "skip", "--batch-rows", "37"]
    assert main(["predict", *common, "--input", str(raw), str(hash_run.raw[0]), "--out", str(one)]) == 0
    assert main(["predict", *common, "--input", str(raw), str(hash_run.raw[0]), "--out", str(two), "--workers", "2",
                 "--chunk-bytes", "20000", "--block-bytes", "5000"]) == 0
    single, parallel = read_scores(one), read_scores(two)
    good = [i for i in range(len(lines)) if i not in bad]
    assert parallel["input"].tolist() == [0] * len(good) + [1] * len(lines)
    np.testing.assert_array_equal(parallel["row"], np.concatenate([good, np.arange(len(lines))]))
    np.testing.assert_array_equal(parallel["row"], single["row"])
    np.testing.assert_allclose(parallel["logit"], single["logit"], rtol=0, atol=1e-6)
