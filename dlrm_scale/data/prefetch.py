"""Background work for the loader: ordered prefetch on a thread pool, and host-to-device staging.

:func:`prefetch` runs a *planner* on a background thread. The planner submits work (row-group reads, batch
assembly) to a pool of ``workers`` threads and hands back, in order, one future per batch; at most ``depth``
batch futures wait in the bounded queue, so memory stays bounded however slow the consumer is. Parquet decoding,
numpy gathers and pinned-memory copies release the GIL, so the threads run in parallel. Errors in the planner or a
task are raised in the consumer; a consumer that stops early stops the planner and cancels queued work.

:func:`to_device` copies each batch on a side CUDA stream one batch ahead of the consumer, so the copy of batch
k + 1 overlaps the step on batch k (pinned host memory makes the copy asynchronous).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, TypeVar

import torch

from dlrm_scale.data.batch import Batch

T = TypeVar("T")
_POLL_S = 0.1


class _End:
    pass


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(plan: Callable[[Executor], Iterator[Future[T]]], *, workers: int, depth: int,
             name: str = "loader") -> Iterator[T]:
    """Yields the results of the futures ``plan(executor)`` produces, in order, computed ahead in the background."""
    executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix=f"{name}-worker")
    ready: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def run_planner() -> None:
        try:
            for future in plan(executor):
                if not put(future):
                    future.cancel()
                    return
            put(_End())
        except BaseException as error:  # handed to the consumer, which re-raises it
            put(_Failure(error))

    planner = threading.Thread(target=run_planner, name=f"{name}-planner", daemon=True)
    planner.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, _End):
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item.result()
    finally:
        stop.set()
        executor.shutdown(wait=False, cancel_futures=True)
        while True:
            try:
                item = ready.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Future):
                item.cancel()
        planner.join()


def to_device(batches: Iterator[Batch], device: torch.device) -> Iterator[Batch]:
    """``batches`` on ``device``. On CUDA each copy is issued on a side stream one batch ahead; the consumer's
    stream waits for that copy only (an event), and the tensors are recorded on it so memory is not reused early."""
    if device.type == "cpu":
        yield from batches
        return
    if device.type != "cuda":
        for batch in batches:
            yield batch.to(device)
        return
    copy_stream = torch.cuda.Stream(device=device)

    def stage(host: Batch) -> tuple[Batch, torch.cuda.Event]:
        with torch.cuda.stream(copy_stream):
            on_device = host.to(device, non_blocking=True)
            copied = torch.cuda.Event()
            copied.record(copy_stream)
        return on_device, copied

    def hand_over(staged: tuple[Batch, torch.cuda.Event]) -> Batch:
        on_device, copied = staged
        current = torch.cuda.current_stream(device)
        current.wait_event(copied)
        on_device.record_stream(current)
        return on_device

    staged = None
    for host in batches:
        following = stage(host)
        if staged is not None:
            yield hand_over(staged)
        staged = following
    if staged is not None:
        yield hand_over(staged)
