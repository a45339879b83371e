"""The training doctor: each condition provoked for real, silence on a healthy run, the same verdict afterwards
from the run folder (``dlrm-scale doctor --run-dir``).

Runs train in this process on a world of one (gloo) on the quickstart's data at a fifth of its size."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from dlrm_scale.cli import main
from dlrm_scale.config import load_config
from dlrm_scale.config_toml import to_toml
from dlrm_scale.data.columns import Columns, take_batch
from dlrm_scale.train import doctor
from dlrm_scale.train.build import DistEnv, build_trainer
from dlrm_scale.train.doctor_cli import read_records
from dlrm_scale.train.model_with_loss import StepOutput
from tests.train.quickstart_data import make_quickstart_data

LR_15 = ["optimizer.embedding.lr=15.0", "optimizer.dense.lr=15.0"]


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> Path:
    return make_quickstart_data(tmp_path_factory.mktemp("quickstart"), rows=60_000)


@pytest.fixture
def env():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield DistEnv(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"))
    finally:
        dist.destroy_process_group()


class WrappedLoader:
    """The trainer's loader with each training batch passed through ``change`` (and everything else as is)."""

    def __init__(self, loader, change) -> None:
        self._loader, self._change = loader, change

    def __iter__(self):
        return (self._change(batch) for batch in self._loader)

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name: str):
        return getattr(self._loader, name)


def train(env: DistEnv, data: Path, out: Path, overrides: list[str], change=None) -> list[dict]:
    """The quickstart recipe (tiny_cpu, global batch 1024 as on its 2 ranks) on one process; its records."""
    cfg = load_config("tiny_cpu", [f"data.path={data}", f"train.out_dir={out}", "train.global_batch_size=1024",
                                   "train.progress=false", *overrides])
    out.mkdir(parents=True)
    (out / "config.toml").write_text(to_toml(cfg))
    trainer = build_trainer(cfg, env)
    if change is not None:
        trainer.train_loader = WrappedLoader(trainer.train_loader, change)
    trainer.fit()
    trainer.logger.close()
    return read_records(out / "metrics.jsonl")


def findings(records: list[dict]) -> dict[str, dict]:
    return {r["code"]: r for r in records if r["kind"] == "doctor"}


def test_silent_on_the_default_quickstart_and_the_cli_agrees(env, quickstart: Path, tmp_path: Path,
                                                             capsys) -> None:
    records = train(env, quickstart, tmp_path / "run", [])
    printed = capsys.readouterr().out
    assert findings(records) == {} and "doctor:" not in printed
    final = [r for r in records if r["kind"] == "eval"][-1]
    assert final["auc"] > 0.8  # a healthy run: what the doctor stayed silent about
    assert main(["doctor", "--run-dir", str(tmp_path / "run")]) == 0
    assert "nothing wrong found" in capsys.readouterr().out


def test_lr_15_is_flagged_by_the_first_evaluation_naming_the_learning_rates(env, quickstart: Path,
                                                                            tmp_path: Path, capsys) -> None:
    # skip_batch: the run goes on whatever the non-finite guard does, so this test sees the doctor alone
    records = train(env, quickstart, tmp_path / "run", [*LR_15, "train.on_nonfinite=skip_batch"])
    printed = capsys.readouterr().out
    first_eval = next(r["step"] for r in records if r["kind"] == "eval")
    found = findings(records)
    assert found and min(r["step"] for r in found.values()) <= first_eval
    for record in found.values():
        assert "optimizer.embedding.lr=15" in record["message"] and "optimizer.dense.lr=15" in record["message"]
        assert record["message"] in printed.splitlines()  # one line each, as printed
    assert main(["doctor", "--run-dir", str(tmp_path / "run")]) == 1
    replayed = capsys.readouterr().out.splitlines()
    assert [r["message"] for r in found.values()] == replayed[:-1]  # the same diagnosis, from the folder


def _shuffle_labels(batch):
    real = torch.nonzero(batch.mask > 0).flatten()
    labels = batch.labels.clone()
    labels[real] = labels[real][torch.randperm(len(real))]
    return type(batch)(dense_features=batch.dense_features, sparse_features=batch.sparse_features,
                       labels=labels, mask=batch.mask)


def test_shuffled_labels_sit_at_the_entropy_and_at_chance(env, quickstart: Path, tmp_path: Path) -> None:
    # 4 epochs of the 40,000 training rows: past the doctor's warm-up of 150,000 rows
    found = findings(train(env, quickstart, tmp_path / "run", ["train.log_every_steps=20", "train.epochs=4",
                                                               "train.eval_max_batches=4"], change=_shuffle_labels))
    assert {"loss_at_entropy", "auc_at_chance"} <= set(found)
    assert "label entropy" in found["loss_at_entropy"]["message"]


def test_a_slow_loader_is_reported_as_loader_bound(env, quickstart: Path, tmp_path: Path) -> None:
    def slow(batch):
        time.sleep(0.3)  # several times a step of this model, even on a busy machine
        return batch

    found = findings(train(env, quickstart, tmp_path / "run",
                           ["train.max_steps=12", "train.log_every_steps=4", "data.eval_split="], change=slow))
    assert set(found) == {"loader_bound"}
    assert "data.num_workers" in found["loader_bound"]["message"]


def _checks(report: list, total_steps: int = 100, overrides: tuple[str, ...] = ()) -> doctor.Checks:
    cfg = load_config("tiny_cpu", list(overrides))
    return doctor.Checks(cfg, total_steps=total_steps, report=report.append)


def test_non_finite_loss_names_the_rates_and_is_reported_once() -> None:
    report: list[doctor.Finding] = []
    checks = _checks(report, overrides=("optimizer.embedding.name=rowwise_adagrad", *LR_15))
    checks.train(10, {"loss": math.nan, "ctr": 0.25})
    checks.train(20, {"loss": math.inf, "ctr": 0.25})
    checks.eval(30, {"auc": 0.5, "logloss": math.nan})
    assert [f.code for f in report] == ["nonfinite_loss"]
    assert "optimizer.embedding.lr=15 (rowwise_adagrad)" in report[0].message and "\n" not in report[0].message


def test_entropy_check_waits_for_the_warmup() -> None:
    report: list[doctor.Finding] = []
    checks = _checks(report, total_steps=1000)  # warm-up: 100 steps and 150,000 rows
    entropy = doctor.label_entropy(0.25)
    checks.train(50, {"loss": entropy, "ctr": 0.25, "samples": 200_000})
    checks.train(120, {"loss": entropy, "ctr": 0.25, "samples": 120_000})
    assert report == []
    checks.train(150, {"loss": 0.9 * entropy, "ctr": 0.25, "samples": 150_000})  # learning: fine
    checks.train(200, {"loss": entropy, "ctr": 0.25, "samples": 200_000})
    assert [f.code for f in report] == ["loss_at_entropy"]


def test_collapsed_predictions_are_measured_from_the_step_outputs() -> None:
    report: list[doctor.Finding] = []
    cfg = load_config("tiny_cpu", ["data.path=", "data.source=synthetic", "data.cardinalities=[10]"])
    dr = doctor.Doctor(cfg, total_steps=10, table_rows=[10], report=report.append, sample_every=1)
    logits = torch.full((64,), -1.1) + 1e-4 * torch.randn(64)  # one score for every row
    labels = (torch.rand(64) < 0.25).float()
    for _ in range(10):
        dr.on_step(StepOutput(torch.tensor(0.56), logits, labels, torch.ones(64)))
    stats = dr.train_stats()
    assert stats["pred_spread"] < 1e-3 and stats["ctr"] == pytest.approx(labels.mean().item())
    dr.check_train(10, {"loss": 0.56, "samples": 200_000, **stats})
    assert "collapsed" in [f.code for f in report]


def _batch(ids: np.ndarray, dense: np.ndarray):
    """A batch of ``len(dense)`` rows with one id per row in each of ``ids``'s features (F, B)."""
    columns = Columns(dense=dense.astype(np.float32), labels=np.zeros(len(dense), np.float32), ids=ids)
    return take_batch(columns, np.arange(len(dense)), batch_size=len(dense),
                      keys=[f"C{f + 1}" for f in range(len(ids))])


def test_ids_beyond_their_table_are_out_of_range() -> None:
    rng = np.random.default_rng(0)
    stats = doctor.BatchStats([1000, 50], check_coverage=True)
    ids = np.stack([rng.integers(0, 1000, 256), rng.integers(0, 60, 256)])  # C2 has 50 rows, ids up to 59
    problems = dict(stats.observe(_batch(ids, rng.random((256, 13)))))
    assert list(problems) == ["ids_out_of_range"] and "C2 ids" in problems["ids_out_of_range"]


def test_ids_cut_to_a_quarter_of_their_table_leave_rows_untouched() -> None:
    rng = np.random.default_rng(0)
    rows = 100_000
    hashed = doctor.BatchStats([rows], check_coverage=True)
    remapped = doctor.BatchStats([rows], check_coverage=True)
    for _ in range(4):
        values = rng.integers(0, 2**40, (1, 512))
        hashed.observe(_batch(values % rows, rng.random((512, 13))))
        remapped.observe(_batch(values % (rows // 4), rng.random((512, 13))))  # a remapping bug
    assert hashed.untouched() is None
    message = remapped.untouched()
    assert message and "C1: 12 of 16 row ranges untouched (first from row 25,000" in message
    assert doctor.BatchStats([rows], check_coverage=False).untouched() is None  # vocab ids: not checked


def test_untransformed_dense_features_are_out_of_range() -> None:
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 100, (1, 128))
    counts = rng.pareto(1.0, (128, 13)) * 100  # raw Criteo-like counts
    stats = doctor.BatchStats([100], check_coverage=True)
    assert stats.observe(_batch(ids, np.log1p(counts))) == []
    problems = dict(stats.observe(_batch(ids, counts)))
    assert "data.dense_transform" in problems["dense_out_of_range"]


def test_the_cli_replays_batch_findings_and_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys) -> None:
    assert main(["doctor", "--run-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line, naming the missing file
    (tmp_path / "config.toml").write_text(to_toml(load_config("tiny_cpu")))
    lines = [{"kind": "train", "step": 50, "loss": 0.40, "ctr": 0.25, "pred_spread": 0.9, "samples": 51_200},
             {"kind": "doctor", "step": 50, "code": "untouched_rows", "message": "doctor: step 50: rows ..."},
             {"kind": "doctor", "step": 60, "code": "collapsed", "message": "recomputed, not replayed"},
             {"kind": "summary", "step": 100, "steps": 100}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["doctor", "--run-dir", str(tmp_path)]) == 1
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "doctor: step 50: rows ..." and len(printed) == 2
