"""Task functions and helpers for the unique-key and rate-limit tests that use real
processes (tests/test_unique_tasks.py, tests/test_rate_limits.py).

Worker processes import this module (`--import limit_tasks`, with tests/ on PYTHONPATH),
and so does the test process, so cloudpickle sends these functions by reference.
"""

from __future__ import annotations

import asyncio
from typing import Any

from reliability_tasks import record

import sitq

#: The rate the real-process test holds two workers to.
RATE = "5/s"


@sitq.task(rate_limit=RATE)
async def limited(key: str) -> str:
    """Counted by the rate limit: at most five starts a second, across all workers."""
    record("start", key)
    return key


async def invoice(number: int) -> int:
    return number


def enqueue_racing(url: str, keys: list[str], barrier: Any, results: Any) -> None:
    """An enqueuer process: for each key, wait at `barrier` until the other enqueuer is
    there too, then enqueue `invoice` under that key at the same moment; put the ids
    received, in order, on `results`."""

    async def run() -> list[str]:
        async with sitq.TaskQueue(url) as queue:
            ids = []
            for number, key in enumerate(keys):
                barrier.wait()  # both processes leave this line together
                ids.append(await queue.with_options(unique_key=key).enqueue(invoice, number))
            return ids

    results.put(asyncio.run(run()))
