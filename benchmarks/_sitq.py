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
from _runner import Measure, Reading, Timed, rate, timed

import sitq
from sitq import SQLiteBackend, TaskQueue, TaskStatus, Worker

DURABILITY = "(WAL, synchronous=NORMAL)"
SITQ = f"sitq {DURABILITY}"
IDLE_CLI_WORKER = "sitq, idle `python -m sitq worker`"
TIMEOUT = 600.0  # seconds: a hung benchmark fails loudly instead of waiting forever
POLL = 0.01  # seconds between two looks at a queue's counts
PREFILL_CHUNK = 10_000


async def prefill(path: Path, n: int, func: Callable[..., Any] = _tasks.tick) -> None:
    """Put `n` due tasks in the file with sitq's own enqueue_many, 10k per transaction."""
    async with TaskQueue(SQLiteBackend(path)) as queue:
        for start in range(0, n, PREFILL_CHUNK):
            size = min(PREFILL_CHUNK, n - start)
            await queue.enqueue_many([sitq.call(func) for _ in range(size)])


async def drain_with_worker(path: Path, n: int, concurrency: int) -> Timed:
    """Wall and CPU time for a fresh worker to run `n` counted tasks, from start() to
    stop() (a graceful stop: every outcome is saved when it returns)."""
    worker = Worker(SQLiteBackend(path), concurrency=concurrency)
    _tasks.COUNTDOWN.arm(n)
    with timed() as took:
        await worker.start()
        try:
            await _tasks.COUNTDOWN.wait_async(TIMEOUT)
        finally:
            await worker.stop()
    return took


async def wait_until_succeeded(queue: TaskQueue, total: int, what: str) -> None:
    """Return once `total` tasks of the queue have succeeded, as `counts()` sees them.

    A task has *run* before its outcome is saved (the worker sends it in its next trip),
    so a check that counts right after the last task ran would find some still running:
    it waits for what it counts, up to TIMEOUT.
    """
    deadline = time.monotonic() + TIMEOUT
    while (await queue.counts())[TaskStatus.SUCCEEDED] < total:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {total:,} tasks not succeeded after {TIMEOUT}s")
        await asyncio.sleep(POLL)


def enqueue_one_by_one(n: int) -> Measure:
    """sitq's `enqueue`, awaited one task at a time: one trip and one commit per task."""

    async def run(workdir: Path) -> list[Reading]:
        async with TaskQueue(SQLiteBackend(workdir / "q.db")) as queue:
            await queue.enqueue(_tasks.noop)  # warm: the connection and the first pickle
            with timed() as took:
                for _ in range(n):
                    await queue.enqueue(_tasks.noop)
        return [rate("sitq", SITQ, n, took)]

    return run


def enqueue_many(n: int) -> Measure:
    """sitq's `enqueue_many`: `n` tasks in one call, one transaction."""

    async def run(workdir: Path) -> list[Reading]:
        async with TaskQueue(SQLiteBackend(workdir / "q.db")) as queue:
            await queue.enqueue(_tasks.noop)
            calls = [sitq.call(_tasks.noop) for _ in range(n)]
            with timed() as took:
                await queue.enqueue_many(calls)
        return [rate("sitq", SITQ, n, took, unit="rows/s")]

    return run


def drain(n: int, concurrency: int) -> Measure:
    """A worker in this process running `n` waiting no-op tasks, from start to stop."""

    async def run(workdir: Path) -> list[Reading]:
        path = workdir / "q.db"
        await prefill(path, n)
        took = await drain_with_worker(path, n, concurrency)
        label = f"sitq, 1 worker, concurrency {concurrency} {DURABILITY}"
        return [rate(f"sitq.c{concurrency}", label, n, took)]

    return run


def end_to_end(n: int) -> Measure:
    """Enqueue one by one, run, and fetch every result; queue and worker share a backend."""

    async def run(workdir: Path) -> list[Reading]:
        backend = SQLiteBackend(workdir / "q.db")
        async with TaskQueue(backend) as queue, Worker(backend):
            await queue.get_result(await queue.enqueue(_tasks.one), timeout=TIMEOUT)
            with timed() as took:
                ids = [await queue.enqueue(_tasks.one) for _ in range(n)]
                results = await queue.gather(ids, timeout=TIMEOUT, progress=False)
        if any(r is None or r.value != 1 for r in results):
            raise RuntimeError("end to end: a task did not return 1")
        return [rate("sitq", f"sitq, worker in-process {DURABILITY}", n, took)]

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
        took = await drain_with_worker(path, self.first, concurrency=10)
        await prefill(path, self.first)
        label = f"sitq, depth {self.depth:,}, concurrency 10"
        return [rate(f"sitq.{self.depth}", label, self.first, took)]

    async def _prepared(self) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="sitq-bench-depth-"))
            await prefill(self.folder / "q.db", self.depth)
        return self.folder / "q.db"

    async def close(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


#: The tables that hold rows per task, with the column naming the task.
TASK_TABLES = {"sitq_tasks": "id", "sitq_attempts": "task_id"}
KEPT = "kept-"  # the id prefix of the finished tasks put in by `keep_finished`
COUNTS_CALLS = 5  # calls of counts() timed per round


async def keep_finished(path: Path, n: int) -> None:
    """Put `n` finished (succeeded) tasks in sitq's file at `path`, fast.

    One task goes through sitq (enqueue, a worker runs it); its rows (the task and its
    attempt record) are then copied `n` times with ids "kept-1", "kept-2"... by one
    INSERT ... SELECT per table: a million rows in seconds, where the queue would take
    minutes. Only the columns the schema has are copied, so it follows the schema.
    """
    backend = SQLiteBackend(path)
    async with TaskQueue(backend) as queue:
        template = await queue.enqueue(_tasks.one)
        await Worker(backend).run_until_idle()
        if await queue.status(template) != TaskStatus.SUCCEEDED:
            raise RuntimeError("keep_finished: the template task did not succeed")
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table, task_column in _task_tables(conn):
            conn.execute(_copy_sql(conn, table, task_column), {"n": n, "template": template})
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    forget_unkept(path)  # the template itself


def _task_tables(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """The tables of TASK_TABLES that this schema has, with their task column."""
    present = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    return [(table, column) for table, column in TASK_TABLES.items() if table in present]


def _copy_sql(conn: sqlite3.Connection, table: str, task_column: str) -> str:
    """INSERT ... SELECT making :n copies of the template task's rows in `table`."""
    info = conn.execute(f"PRAGMA table_info({table})").fetchall()
    # every column but an INTEGER PRIMARY KEY (the rowid: SQLite numbers the copies)
    columns = [name for _, name, kind, _, _, pk in info if not (pk and kind == "INTEGER")]
    values = [f"'{KEPT}' || number" if c == task_column else f"template.{c}" for c in columns]
    return f"""
        WITH RECURSIVE numbers(number) AS (
            SELECT 1 UNION ALL SELECT number + 1 FROM numbers WHERE number < :n)
        INSERT INTO {table} ({", ".join(columns)})
        SELECT {", ".join(values)} FROM numbers, {table} AS template
        WHERE template.{task_column} = :template"""


def forget_unkept(path: Path) -> None:
    """Delete every task but the kept ones (a round's own), so each round starts alike."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table, task_column in _task_tables(conn):
            conn.execute(f"DELETE FROM {table} WHERE {task_column} NOT LIKE '{KEPT}%'")
        conn.execute("COMMIT")
    finally:
        conn.close()


class KeptRows:
    """What a long history costs: `counts()`, and a drain of `n` no-op tasks at
    concurrency 10, with `kept` finished tasks in the file (as a week of retention keeps).

    The file is filled once (`keep_finished`); each round enqueues `n` tasks, drains them,
    checks they all succeeded, then deletes them, so every round sees `kept` rows.
    """

    def __init__(self, kept: int, n: int) -> None:
        self.kept, self.n = kept, n
        self.folder: Path | None = None

    async def run(self, workdir: Path) -> list[Reading]:
        path = await self._prepared()
        async with TaskQueue(SQLiteBackend(path)) as queue:
            await queue.counts()  # warm: the connection and SQLite's page cache
            samples = []
            for _ in range(COUNTS_CALLS):
                with timed() as took:
                    await queue.counts()
                samples.append(took.seconds * 1000)
            await prefill(path, self.n)
            drained = await drain_with_worker(path, self.n, concurrency=10)
            await wait_until_succeeded(queue, self.kept + self.n, "kept rows")
        forget_unkept(path)
        label = f"sitq, {self.kept:,} finished tasks kept"
        return [
            Reading(f"counts.{self.kept}", label, percentile(samples, 50), "ms",
                    f"counts() with finished tasks kept (median of {COUNTS_CALLS} calls)"),
            rate(f"drain.{self.kept}", label, self.n, drained,
                 work=f"drain {self.n:,} no-op tasks, concurrency 10, finished tasks kept"),
        ]  # fmt: skip

    async def _prepared(self) -> Path:
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="sitq-bench-kept-"))
            await keep_finished(self.folder / "q.db", self.kept)
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
            await wait_until_succeeded(queue, 1_000 + n, "memory run")
            growth = rss_mb() - before
            counts = await queue.counts()
        retained, finished = sum(counts.values()), counts[TaskStatus.SUCCEEDED]
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
