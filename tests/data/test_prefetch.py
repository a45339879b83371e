"""Ordered background prefetch: order kept with many workers, lookahead bounded, errors reach the consumer."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Executor, Future

import pytest

from dlrm_scale.data.prefetch import prefetch


def _slow_identity(value: int, delay: float) -> int:
    time.sleep(delay)
    return value


def test_results_come_in_order_from_many_workers() -> None:
    delays = [random.Random(0).uniform(0, 0.01) for _ in range(40)]

    def plan(executor: Executor) -> Iterator[Future[int]]:
        for index, delay in enumerate(delays):
            yield executor.submit(_slow_identity, index, delay)

    assert list(prefetch(plan, workers=4, depth=6)) == list(range(40))


def test_lookahead_is_bounded() -> None:
    submitted = 0
    lock = threading.Lock()

    def plan(executor: Executor) -> Iterator[Future[int]]:
        nonlocal submitted
        for index in range(1000):
            with lock:
                submitted += 1
            yield executor.submit(_slow_identity, index, 0.0)

    results = prefetch(plan, workers=2, depth=3)
    assert next(results) == 0
    time.sleep(0.3)
    with lock:
        ahead = submitted
    results.close()
    # one consumed, `depth` waiting in the queue, one in the planner's hand blocked on the full queue
    assert ahead <= 1 + 3 + 1, f"{ahead} tasks submitted while the consumer held one"


def test_errors_reach_the_consumer() -> None:
    def failing_task(executor: Executor) -> Iterator[Future[int]]:
        yield executor.submit(_slow_identity, 0, 0.0)
        yield executor.submit(lambda: 1 / 0)

    results = prefetch(failing_task, workers=2, depth=2)
    assert next(results) == 0
    with pytest.raises(ZeroDivisionError):
        next(results)

    def failing_planner(executor: Executor) -> Iterator[Future[int]]:
        yield executor.submit(_slow_identity, 0, 0.0)
        raise OSError("shard vanished")

    with pytest.raises(OSError, match="shard vanished"):
        list(prefetch(failing_planner, workers=1, depth=2))
