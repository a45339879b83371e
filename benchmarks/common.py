"""Timing and reporting helpers shared by the benchmarks.

- :func:`time_it`: median over repeats after a warm-up; CUDA events around each call on a GPU (device work is
  asynchronous), ``time.perf_counter`` on the CPU. Callers rotate input sets so repeated runs do not measure L2.
- :func:`measure_copy_bandwidth` / :func:`measure_matmul_rate`: the two ceilings of the device, measured in the
  same run as the benchmark (a large device-to-device copy counting bytes read plus written; a large matmul).
- :func:`device_label` and :func:`results_dir`: ``benchmarks/results/<date>_<device>/``.
"""

from __future__ import annotations

import datetime as dt
import platform
import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True, kw_only=True)
class Timing:
    """Milliseconds per call over ``repeat`` timed calls."""

    median_ms: float
    min_ms: float
    max_ms: float
    repeat: int


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(fn: Callable[[int], object], *, device: torch.device, warmup: int, repeat: int) -> Timing:
    """Times ``fn(i)`` for i = 0, 1, … (``i`` lets the caller rotate input sets): ``warmup`` untimed calls
    (compilation, autotuning, allocator growth), then ``repeat`` timed ones; returns their median."""
    for index in range(warmup):
        fn(index)
    synchronize(device)
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(repeat)]
        for index in range(repeat):
            starts[index].record()
            fn(warmup + index)
            ends[index].record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) for start, end in zip(starts, ends)]
    else:
        times = []
        for index in range(repeat):
            begin = time.perf_counter()
            fn(warmup + index)
            times.append((time.perf_counter() - begin) * 1e3)
    return Timing(median_ms=statistics.median(times), min_ms=min(times), max_ms=max(times), repeat=repeat)


def measure_copy_bandwidth(device: torch.device, *, nbytes: int, warmup: int = 3, repeat: int = 20) -> float:
    """Device-memory bandwidth in GB/s (1e9 B/s) of ``dst.copy_(src)``, counting bytes read plus bytes written."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    timing = time_it(lambda _: dst.copy_(src), device=device, warmup=warmup, repeat=repeat)
    return 2 * src.numel() * 4 / (timing.median_ms * 1e-3) / 1e9


def measure_matmul_rate(device: torch.device, dtype: torch.dtype, *, size: int, warmup: int = 3,
                        repeat: int = 10) -> float:
    """TFLOP/s of a ``size``³ matmul on random data (``2 size³`` operations), in torch's current precision
    settings (fp32 is full fp32 unless TF32 was allowed)."""
    left = torch.randn(size, size, device=device, dtype=dtype)
    right = torch.randn(size, size, device=device, dtype=dtype)
    timing = time_it(lambda _: left @ right, device=device, warmup=warmup, repeat=repeat)
    return 2 * size**3 / (timing.median_ms * 1e-3) / 1e12


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def device_label(device: torch.device) -> str:
    """A short file-name-safe name: ``h100-80gb-hbm3`` for "NVIDIA H100 80GB HBM3", ``cpu-x86_64`` on a CPU."""
    if device.type == "cuda":
        name = re.sub(r"^nvidia\s+", "", device_name(device).lower())
    else:
        name = f"cpu-{platform.machine() or 'unknown'}"
    return re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-")


def results_dir(device: torch.device, root: Path = RESULTS) -> Path:
    """``benchmarks/results/<YYYY-MM-DD>_<device label>/`` (created)."""
    path = root / f"{dt.date.today().isoformat()}_{device_label(device)}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
