"""Metric sinks and the throughput meter."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dlrm_scale.config import TrainConfig
from dlrm_scale.metrics import JsonlSink, Progress, StdoutSink, ThroughputMeter, make_metrics_logger


def test_throughput_meter_windows() -> None:
    now = [10.0]
    meter = ThroughputMeter(clock=lambda: now[0])
    meter.add(300)
    now[0] = 12.0
    meter.add(100)
    assert meter.rate() == pytest.approx(200.0)
    now[0] = 13.0
    meter.add(50)
    assert meter.rate() == pytest.approx(50.0)


def test_jsonl_appends_and_keeps_full_precision(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    loss = 0.1 + 0.2  # not representable in few digits
    for step in (1, 2):
        sink = JsonlSink(path)
        sink.write("train", step, {"loss": loss, "epoch": 0})
        sink.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert records == [{"kind": "train", "step": 1, "loss": loss, "epoch": 0},
                       {"kind": "train", "step": 2, "loss": loss, "epoch": 0}]


def test_stdout_line() -> None:
    lines = []
    StdoutSink(lines.append).write("eval", 40, {"auc": 0.7612345678, "rows": 1000, "samples_per_s": 123456.7})
    assert lines == ["[eval] step 40 | auc 0.761235 | rows 1000 | samples_per_s 123,457"]


def test_rank0_logs_to_jsonl_and_tensorboard_other_ranks_to_nothing(tmp_path: Path) -> None:
    cfg = TrainConfig(out_dir=str(tmp_path), tensorboard=True)
    assert make_metrics_logger(cfg, rank=1).sinks == []
    logger = make_metrics_logger(cfg, rank=0)
    logger.log("train", 5, {"loss": 0.5, "split": "val"})
    logger.close()
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["loss"] == 0.5
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_missing_tensorboard_is_skipped_with_a_warning(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now raises ImportError
    with pytest.warns(UserWarning, match="tensorboard package is not installed"):
        logger = make_metrics_logger(TrainConfig(out_dir=str(tmp_path), tensorboard=True), rank=0)
    assert len(logger.sinks) == 2
    logger.close()


def test_progress_bar_disabled_and_enabled(capsys) -> None:
    for enabled in (False, True):
        bar = Progress(total=10, initial=2, enabled=enabled, tty=True)
        bar.update()
        bar.set_postfix(loss=0.25)
        bar.close()
    assert "3/10" in capsys.readouterr().err


def test_progress_off_a_terminal_is_a_line_per_tenth() -> None:
    """A log file gets plain lines (no carriage returns), one per tenth of the run, with a rate and an ETA."""
    lines: list[str] = []
    now = iter(range(100))
    progress = Progress(total=40, initial=8, enabled=True, tty=False, write=lines.append, clock=lambda: next(now))
    for _ in range(32):
        progress.update()
    progress.close()
    assert [line.split(",")[0] for line in lines] == [f"progress: step {s}/40 ({s * 100 // 40}%)"
                                                     for s in range(12, 41, 4)]
    # the clock advances 1 s per line: 4 steps/s throughout
    assert lines[0].endswith("4 steps/s, eta 7 s") and lines[-1].endswith("4 steps/s, eta 0 s") and not any("\r" in line for line in lines)
    silent: list[str] = []
    Progress(total=40, initial=0, enabled=False, tty=False, write=silent.append).update()
    assert silent == []
