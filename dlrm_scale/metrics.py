"""Where training numbers go: throughput, and sinks for stdout, JSONL and TensorBoard; progress on rank 0.

Only rank 0 writes (:func:`make_metrics_logger` gives the other ranks a logger with no sinks), so a job of any
size produces one ``<out_dir>/metrics.jsonl``. Each record is one line::

    {"kind": "train", "step": 100, "epoch": 0, "loss": 0.4571, "samples_per_s": 81234.5, "lr": 0.02, ...}
    {"kind": "eval", "step": 100, "split": "val", "auc": 0.7612, "logloss": 0.4503, "ne": 0.8731, ...}
    {"kind": "summary", "step": 400, ...}

The evaluation metrics themselves (AUC, logloss, NE, accuracy) are computed in ``dlrm_scale.train.evaluate``.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from dlrm_scale.config import TrainConfig


class ThroughputMeter:
    """Samples per second between two calls of :meth:`rate`. The caller reads it right after a host sync (a
    ``.item()`` of this step's loss), so the wall time covers finished device work, not just queued kernels."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._start = clock()
        self._samples = 0

    def add(self, samples: int) -> None:
        self._samples += samples

    def rate(self) -> float:
        """Samples per second since the last call (or construction), then starts a new window."""
        now = self._clock()
        elapsed = now - self._start
        rate = self._samples / elapsed if elapsed > 0 else math.nan
        self._start, self._samples = now, 0
        return rate


class MetricsSink(Protocol):
    def write(self, kind: str, step: int, values: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def write_line(text: str) -> None:
    """Prints ``text`` above an active tqdm bar (or plainly when there is none)."""
    from tqdm import tqdm

    tqdm.write(text)
    sys.stdout.flush()


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


class StdoutSink:
    """One human-readable line per record: ``[train] step 100 | loss 0.4571 | samples_per_s 81,235``."""

    def __init__(self, write: Callable[[str], None] = write_line) -> None:
        self._write = write

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        fields = " | ".join(f"{key} {_format_value(value)}" for key, value in values.items())
        self._write(f"[{kind}] step {step} | {fields}")

    def close(self) -> None:
        pass


class JsonlSink:
    """Appends one JSON object per record to ``path`` (appending, so a resumed run continues the same file).
    Floats keep their full precision (``repr``), so runs can be compared exactly from the file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        self._file.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    """Scalars under ``<kind>/<name>`` (``train/loss``, ``eval/auc``); non-numeric values are skipped."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, kind: str, step: int, values: dict[str, Any]) -> None:
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self._writer.add_scalar(f"{kind}/{key}", value, step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MetricsLogger:
    """Fans one record out to every sink. ``log("eval", 100, {"auc": 0.76})``."""

    def __init__(self, sinks: list[MetricsSink]) -> None:
        self.sinks = sinks

    def log(self, kind: str, step: int, values: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.write(kind, step, values)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class Progress:
    """Progress over the run's optimizer steps on rank 0 (inactive elsewhere or when disabled): a tqdm bar (its
    ETA is tqdm's) when stderr is a terminal; otherwise, since a bar's carriage returns garble log files, a plain
    line at every tenth of the run: ``progress: step 140/392 (35%), 21.4 steps/s, eta 12 s``. Print with
    :func:`write_line` while it is active."""

    def __init__(self, *, total: int, initial: int, enabled: bool, tty: bool | None = None,
                 write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.perf_counter) -> None:
        self._bar = None
        self._lines = False
        self._total, self._step = total, initial
        self._write = write or write_line
        self._clock = clock
        self._start, self._start_step = clock(), initial
        self._next_line = self._next_tenth(initial)
        if not enabled:
            return
        if sys.stderr.isatty() if tty is None else tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)
        else:
            self._lines = total > 0

    def _next_tenth(self, step: int) -> int:
        tenth = max(1, -(-self._total // 10))  # ceil: at most ten lines
        return (step // tenth + 1) * tenth

    def update(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)
        self._step += steps
        if self._lines and self._step >= min(self._next_line, self._total):
            self._next_line = self._next_tenth(self._step)
            elapsed = self._clock() - self._start
            rate = (self._step - self._start_step) / elapsed if elapsed > 0 else math.nan
            eta = (self._total - self._step) / rate if rate > 0 else math.nan
            self._write(f"progress: step {self._step}/{self._total} ({100 * self._step / self._total:.0f}%), "
                        f"{rate:.3g} steps/s, eta {eta:.0f} s")
            if self._step >= self._total:
                self._lines = False

    def set_postfix(self, **values: Any) -> None:
        if self._bar is not None:
            self._bar.set_postfix({k: _format_value(v) for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def make_metrics_logger(train_cfg: TrainConfig, *, rank: int) -> MetricsLogger:
    """Rank 0: stdout, ``<out_dir>/metrics.jsonl`` and, with ``train.tensorboard``,
    ``<out_dir>/tensorboard`` (skipped with a warning when the ``tensorboard`` package is missing). Other ranks:
    no sinks."""
    if rank != 0:
        return MetricsLogger([])
    out_dir = Path(train_cfg.out_dir)
    sinks: list[MetricsSink] = [StdoutSink(), JsonlSink(out_dir / "metrics.jsonl")]
    if train_cfg.tensorboard:
        try:
            sinks.append(TensorBoardSink(out_dir / "tensorboard"))
        except ImportError:
            warnings.warn("train.tensorboard is set but the tensorboard package is not installed "
                          "(pip install 'dlrm-scale[tensorboard]'); TensorBoard logging is off", stacklevel=2)
    return MetricsLogger(sinks)
