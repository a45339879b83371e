"""Runs a list of tasks on ``--workers`` processes with a progress bar (input bytes, rows/s, ETA) on stderr.

Worker processes are spawned (not forked: pyarrow's thread pools do not survive a fork), each single-threaded
so ``--workers`` is the number of cores used, and on Linux they die with the parent (``PR_SET_PDEATHSIG``), so a
killed run leaves no orphan still writing shards. With one worker, or one task, tasks run in this process.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import signal
import sys
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait

from tqdm import tqdm

from data_prep.config import PrepConfig
from data_prep.tasks import ProgressSink

_SINK: ProgressSink | None = None
_PR_SET_PDEATHSIG = 1


def _init_worker(nbytes, rows) -> None:
    global _SINK
    import pyarrow as pa

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C; workers die with it
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    _SINK = ProgressSink(nbytes, rows)


def _run_in_worker(task, cfg: PrepConfig) -> None:
    task.run(cfg, _SINK)


class _Bar:
    """A tqdm bar over input bytes, refreshed from the shared counters by a thread, with rows and rows/s."""

    def __init__(self, *, desc: str, total: int, enabled: bool, nbytes, rows) -> None:
        self._bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                         disable=not enabled, dynamic_ncols=True, mininterval=0.5)
        self._bytes, self._rows = nbytes, rows
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _update(self, refresh: bool = True) -> None:
        rows = self._rows.value
        rate = rows / max(time.perf_counter() - self._start, 1e-9)
        self._bar.n = min(self._bytes.value, self._bar.total or self._bytes.value)
        if rows:
            self._bar.set_postfix_str(f"{rows:,} rows, {rate:,.0f} rows/s", refresh=False)
        if refresh:
            self._bar.refresh()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._update()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._update(refresh=False)
        self._bar.close()  # draws the final state once


def run_tasks(tasks: list, cfg: PrepConfig, *, desc: str) -> int:
    """Runs ``tasks`` (largest first); raises the first task's exception after stopping the others. Returns
    the rows the tasks reported."""
    if not tasks:
        return 0
    context = multiprocessing.get_context("spawn")
    nbytes, rows = context.Value("q", 0), context.Value("q", 0)
    tasks = sorted(tasks, key=lambda t: -t.nbytes)
    bar = _Bar(desc=desc, total=sum(t.nbytes for t in tasks), enabled=cfg.progress, nbytes=nbytes, rows=rows)
    try:
        workers = min(cfg.workers, len(tasks))
        if workers <= 1:
            sink = ProgressSink(nbytes, rows)
            for task in tasks:
                task.run(cfg, sink)
        else:
            _run_pool(tasks, cfg, workers, context, nbytes, rows)
    finally:
        bar.close()
    return rows.value


def _run_pool(tasks: list, cfg: PrepConfig, workers: int, context, nbytes, rows) -> None:
    executor = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                   initargs=(nbytes, rows))
    try:
        futures = [executor.submit(_run_in_worker, task, cfg) for task in tasks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            if future.exception() is not None:
                raise future.exception()
    except BaseException:
        # stop the other workers now rather than after their current chunk (the executor has no public way)
        for process in list(getattr(executor, "_processes", {}).values()):
            process.kill()
        executor.shutdown(wait=False, cancel_futures=True)
        raise
    executor.shutdown(wait=True)
