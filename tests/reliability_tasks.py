"""Task functions for the real-process tests (tests/test_reliability.py, tests/test_cli.py).

Workers run these in *other processes*, so a task cannot report back through memory. Each
one appends a line "EVENT KEY PID" to the file named by the SITQ_TEST_LOG environment
variable, opened with O_APPEND: every write lands whole at the end of the file, even with
many processes writing at once. "start" means an execution began, "end" that it completed;
counting them per key tells how often each task really ran.

Workers import this module with `python -m sitq worker DB --import reliability_tasks` and
PYTHONPATH containing tests/; the test process imports it the same way, so cloudpickle
sends these functions by reference (by import path).
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from pathlib import Path

import sitq
from sitq import RetryPolicy

LOG_ENV = "SITQ_TEST_LOG"
FILE_POLL = 0.01  # seconds between looks for a release file: the task's own work loop


def record(event: str, key: str) -> None:
    """Append one "event key pid" line to the shared log, in one write."""
    line = f"{event} {key} {os.getpid()}\n".encode()
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_log(path: str | os.PathLike[str]) -> list[tuple[str, str, int]]:
    """The log as (event, key, pid) tuples, in the order they were written."""
    if not Path(path).exists():
        return []
    rows = []
    for line in Path(path).read_text().splitlines():
        event, key, pid = line.split()
        rows.append((event, key, int(pid)))
    return rows


def tally(path: str | os.PathLike[str], event: str) -> collections.Counter[str]:
    """How many times each key logged `event` ("start" = executions, "end" = completions)."""
    return collections.Counter(key for e, key, _ in read_log(path) if e == event)


async def count(key: str) -> str:
    """The quick task of the throughput test: one execution, recorded."""
    record("start", key)
    record("end", key)
    return key


async def wait_for_file(key: str, path: str) -> str:
    """Run until `path` exists (the test creates it): a task the test can hold mid-run."""
    record("start", key)
    while not os.path.exists(path):
        await asyncio.sleep(FILE_POLL)
    record("end", key)
    return key


@sitq.task(retry=RetryPolicy.fixed(0, max_attempts=3))
async def survive_a_crash(key: str, path: str) -> str:
    """`wait_for_file` with a retry policy (3 attempts, no wait): a worker lost mid-run
    costs this task one attempt, and the next worker runs it again at once."""
    return await wait_for_file(key, path)


async def long_async(key: str, seconds: float) -> str:
    """An async task that runs longer than a worker's lease."""
    record("start", key)
    await asyncio.sleep(seconds)  # the task's work, not a synchronisation
    record("end", key)
    return key


def long_blocking(key: str, seconds: float) -> str:
    """A plain function (run in a worker thread) that runs longer than the lease."""
    record("start", key)
    time.sleep(seconds)  # the task's work: blocks its thread, not the worker's loop
    record("end", key)
    return key


@sitq.task(retry=RetryPolicy.fixed(0, max_attempts=3))
async def count_again_if_lost(key: str) -> str:
    """`count` with a retry policy (3 attempts, no wait): a task whose worker died while
    running it is run again, and the lost run shows in its attempts."""
    return await count(key)
