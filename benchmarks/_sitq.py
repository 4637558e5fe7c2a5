"""sitq measured in this process, through its public API only.

Each function returns a `Measure`: an async function that gets a fresh empty folder, does
one round of one piece of work, and returns what it read. Only the work itself is inside
the timer; preparing (prefilling a queue, warming a connection) happens before it starts.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _tasks
from _runner import Measure, Reading

import sitq
from sitq import SQLiteBackend, TaskQueue, TaskStatus, Worker

DURABILITY = "(WAL, synchronous=NORMAL)"
SITQ = f"sitq {DURABILITY}"
IDLE_CLI_WORKER = "sitq, idle `python -m sitq worker`"
TIMEOUT = 600.0  # seconds: a hung benchmark fails loudly instead of waiting forever
PREFILL_CHUNK = 10_000


async def prefill(path: Path, n: int, func: Callable[..., Any] = _tasks.tick) -> None:
    """Put `n` due tasks in the file with sitq's own enqueue_many, 10k per transaction."""
    async with TaskQueue(SQLiteBackend(path)) as queue:
        for start in range(0, n, PREFILL_CHUNK):
            size = min(PREFILL_CHUNK, n - start)
            await queue.enqueue_many([sitq.call(func) for _ in range(size)])


async def drain_with_worker(path: Path, n: int, concurrency: int) -> float:
    """Seconds for a fresh worker to run `n` counted tasks, from start() to stop()."""
    worker = Worker(SQLiteBackend(path), concurrency=concurrency)
    _tasks.COUNTDOWN.arm(n)
    started = time.perf_counter()
    await worker.start()
    try:
        await _tasks.COUNTDOWN.wait_async(TIMEOUT)
    finally:
        await worker.stop()
    return time.perf_counter() - started


def enqueue_one_by_one(n: int) -> Measure:
    async def run(workdir: Path) -> list[Reading]:
        async with TaskQueue(SQLiteBackend(workdir / "q.db")) as queue:
            await queue.enqueue(_tasks.noop)  # warm: the connection and the first pickle
            started = time.perf_counter()
            for _ in range(n):
                await queue.enqueue(_tasks.noop)
            elapsed = time.perf_counter() - started
        return [Reading("sitq", SITQ, n / elapsed, "tasks/s")]

    return run


def enqueue_many(n: int) -> Measure:
    async def run(workdir: Path) -> list[Reading]:
        async with TaskQueue(SQLiteBackend(workdir / "q.db")) as queue:
            await queue.enqueue(_tasks.noop)
            calls = [sitq.call(_tasks.noop) for _ in range(n)]
            started = time.perf_counter()
            await queue.enqueue_many(calls)
            elapsed = time.perf_counter() - started
        return [Reading("sitq", SITQ, n / elapsed, "rows/s")]

    return run


def drain(n: int, concurrency: int) -> Measure:
    async def run(workdir: Path) -> list[Reading]:
        path = workdir / "q.db"
        await prefill(path, n)
        elapsed = await drain_with_worker(path, n, concurrency)
        label = f"sitq, 1 worker, concurrency {concurrency} {DURABILITY}"
        return [Reading(f"sitq.c{concurrency}", label, n / elapsed, "tasks/s")]

    return run


def end_to_end(n: int) -> Measure:
    """Enqueue one by one, run, and fetch every result; queue and worker share a backend."""

    async def run(workdir: Path) -> list[Reading]:
        backend = SQLiteBackend(workdir / "q.db")
        async with TaskQueue(backend) as queue, Worker(backend):
            await queue.get_result(await queue.enqueue(_tasks.one), timeout=TIMEOUT)
            started = time.perf_counter()
            ids = [await queue.enqueue(_tasks.one) for _ in range(n)]
            results = await queue.gather(ids, timeout=TIMEOUT, progress=False)
            elapsed = time.perf_counter() - started
        if any(r is None or r.value != 1 for r in results):
            raise RuntimeError("end to end: a task did not return 1")
        return [Reading("sitq", f"sitq, worker in-process {DURABILITY}", n / elapsed, "tasks/s")]

    return run


async def pickup_ms(queue: TaskQueue, gaps: list[float]) -> list[float]:
    """Milliseconds from enqueue to task start, one sample after each idle gap.

    The task returns its own start time (wall clock), so the same code measures a worker in
    another process. The gap lets the worker go idle again between samples.
    """
    samples = []
    for gap in gaps:
        await asyncio.sleep(gap)
        sent = time.time()
        result = await queue.get_result(await queue.enqueue(_tasks.stamp), timeout=TIMEOUT)
        if result is None or not result.is_success():
            raise RuntimeError(f"pickup: the stamp task did not succeed: {result}")
        samples.append((result.value - sent) * 1000)
    return samples


def pickup_readings(key: str, contender: str, where: str, samples: list[float]) -> list[Reading]:
    return [
        Reading(f"{key}.p50", contender, percentile(samples, 50), "ms", f"pickup p50, {where}"),
        Reading(f"{key}.p95", contender, percentile(samples, 95), "ms", f"pickup p95, {where}"),
    ]


def pickup_in_process(gaps: list[float]) -> Measure:
    async def run(workdir: Path) -> list[Reading]:
        backend = SQLiteBackend(workdir / "q.db")
        async with TaskQueue(backend) as queue, Worker(backend):
            await pickup_ms(queue, [0.0])  # warm-up, not counted
            samples = await pickup_ms(queue, gaps)
        return pickup_readings("in", "sitq, idle worker in-process", "in-process", samples)

    return run


class DepthDrain:
    """The first `first` tasks drained from a queue `depth` deep: does the backlog cost?

    The file is filled once; after each round the drained tasks are topped up, so every
    round starts at the same depth (finished tasks stay in the file, as they would).
    """

    def __init__(self, depth: int, first: int) -> None:
        self.depth, self.first = depth, first
        self.folder: Path | None = None

    async def run(self, workdir: Path) -> list[Reading]:
        path = await self._prepared()
        elapsed = await drain_with_worker(path, self.first, concurrency=10)
        await prefill(path, self.first)
        label = f"sitq, depth {self.depth:,}, concurrency 10"
        return [Reading(f"sitq.{self.depth}", label, self.first / elapsed, "tasks/s")]

    async def _prepared(self) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="sitq-bench-depth-"))
            await prefill(self.folder / "q.db", self.depth)
        return self.folder / "q.db"

    async def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def memory_and_storage(n: int, chunk: int = 5_000) -> Measure:
    """RSS growth of a process running `n` tasks (queue and worker in it), then the file's
    size per task once every task has finished and the WAL is checkpointed."""

    async def run(workdir: Path) -> list[Reading]:
        path = workdir / "q.db"
        backend = SQLiteBackend(path)
        async with TaskQueue(backend) as queue, Worker(backend):
            await run_counted(queue, 1_000)  # warm-up: imports, caches, SQLite's page cache
            before = rss_mb()
            for start in range(0, n, chunk):
                await run_counted(queue, min(chunk, n - start))
            growth = rss_mb() - before
            retained = sum((await queue.counts()).values())
            finished = (await queue.counts())[TaskStatus.SUCCEEDED]
        if finished != retained:
            raise RuntimeError(f"memory run: {retained - finished} task(s) did not succeed")
        size = checkpointed_size(path)
        return [
            Reading(
                "rss",
                "sitq, queue + worker in-process",
                growth,
                "MB",
                f"RSS growth over {n:,} tasks",
            ),
            Reading("bytes", SITQ, size / retained, "B/task", "bytes per retained task"),
        ]

    return run


async def run_counted(queue: TaskQueue, n: int) -> None:
    """Enqueue `n` counted tasks in one batch and wait until a running worker ran them all."""
    _tasks.COUNTDOWN.arm(n)
    await queue.enqueue_many([sitq.call(_tasks.tick) for _ in range(n)])
    await _tasks.COUNTDOWN.wait_async(TIMEOUT)


def rss_mb() -> float:
    """This process's resident memory now (not its peak), in MB, from /proc."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def checkpointed_size(path: Path) -> int:
    """Bytes of the database file after moving the WAL's pages into it."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return path.stat().st_size


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile: an actual sample, no interpolation."""
    ordered = sorted(samples)
    rank = max(1, round(pct / 100 * len(ordered)))
    return ordered[rank - 1]
