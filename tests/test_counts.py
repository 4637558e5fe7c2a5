"""counts() on SQLite: the finished states come from counters kept by triggers (schema 5).

What must hold: whatever happens to the rows (enqueue, run, fail, retry, cancel, requeue,
purge, prune, a DELETE typed by hand), counts() says what a GROUP BY over the table says;
a file made before the counters gets them filled from its rows when it is opened; and
counts() reads no finished row, so a million kept cost it no more than a thousand.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_tasks import fail_then_succeed

from sitq import FakeClock, RetryPolicy, SQLiteBackend, TaskQueue, TaskStatus, Worker
from sitq.backends.sqlite import counting
from sitq.backends.sqlite.sql import SCHEMA_VERSION

ALWAYS = 10**9  # fail this many times first: a task that never succeeds


def counted_by_hand(path: Path) -> dict[TaskStatus, int]:
    """The counts as a GROUP BY over every row sees them, on a connection of its own."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT status, COUNT(*) FROM sitq_tasks GROUP BY status")
        found = {TaskStatus(status): n for status, n in rows}
    return {status: found.get(status, 0) for status in TaskStatus}


Step = Callable[[TaskQueue, Worker, FakeClock, Path], Coroutine[Any, Any, None]]


async def enqueue(failures: int, retries: bool, delay: float, queue: TaskQueue) -> None:
    policy = RetryPolicy.fixed(1.0, max_attempts=3) if retries else None
    await queue.with_options(retry=policy, delay=delay or None).enqueue(fail_then_succeed, failures)


def step_strategy() -> st.SearchStrategy[Step]:
    """One thing done to the queue; each ends with the rows settled (no task left running)."""

    def enqueuing(failures: int, retries: bool, delay: float) -> Step:
        async def step(queue: TaskQueue, worker: Worker, clock: FakeClock, path: Path) -> None:
            await enqueue(failures, retries, delay, queue)

        return step

    def after_first(failures: int) -> Step:  # a child of the oldest task there is
        async def step(queue: TaskQueue, worker: Worker, clock: FakeClock, path: Path) -> None:
            tasks = await queue.backend.list_tasks(limit=1)
            after = [tasks[0].task_id] if tasks else []
            await queue.with_options(after=after).enqueue(fail_then_succeed, failures)

        return step

    async def run(queue: TaskQueue, worker: Worker, clock: FakeClock, path: Path) -> None:
        await worker.run_until_idle()

    async def later(queue: TaskQueue, worker: Worker, clock: FakeClock, path: Path) -> None:
        clock.advance(2.0)

    def cancelling(index: int) -> Step:
        async def step(queue: TaskQueue, worker: Worker, clock: FakeClock, path: Path) -> None:
            tasks = await queue.backend.list_tasks()
            if tasks:
                await queue.cancel(tasks[index % len(tasks)].task_id)

        return step

    def requeuing(index: int) -> Step:
        async def step(queue: TaskQueue, worker: Worker, clock: FakeClock, path: Path) -> None:
            tasks = await queue.backend.list_tasks(statuses=[TaskStatus.FAILED])
            tasks += await queue.backend.list_tasks(statuses=[TaskStatus.CANCELLED])
            if tasks:
                await queue.requeue(tasks[index % len(tasks)].task_id)

        return step

    async def purge(queue: TaskQueue, worker: Worker, clock: FakeClock, path: Path) -> None:
        await queue.purge_dead_letters()

    async def prune(queue: TaskQueue, worker: Worker, clock: FakeClock, path: Path) -> None:
        await queue.prune(1.0)

    async def by_hand(queue: TaskQueue, worker: Worker, clock: FakeClock, path: Path) -> None:
        with sqlite3.connect(path) as conn:  # one finished row, deleted behind sitq's back
            conn.execute(
                "DELETE FROM sitq_tasks WHERE seq = (SELECT MIN(seq) FROM sitq_tasks "
                "WHERE status IN ('succeeded', 'failed', 'cancelled'))"
            )

    index = st.integers(0, 20)
    return st.one_of(
        st.builds(enqueuing, st.sampled_from([0, 1, ALWAYS]), st.booleans(),
                  st.sampled_from([0.0, 3.0])),
        st.builds(after_first, st.sampled_from([0, ALWAYS])),
        st.just(run), st.just(later), st.builds(cancelling, index), st.builds(requeuing, index),
        st.just(purge), st.just(prune), st.just(by_hand),
    )  # fmt: skip


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=st.lists(step_strategy(), min_size=1, max_size=25))
def test_counts_are_what_a_group_by_counts_after_any_steps(steps: list[Step]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="sitq-counts-"))
    try:
        asyncio.run(_play(steps, folder / "q.db"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


async def _play(steps: list[Step], path: Path) -> None:
    clock = FakeClock()
    backend = SQLiteBackend(path)
    async with TaskQueue(backend, clock=clock) as queue:
        worker = Worker(backend, clock=clock)
        for step in steps:
            await step(queue, worker, clock, path)
            assert await queue.counts() == counted_by_hand(path)


async def test_a_file_older_than_the_counters_gets_them_filled_from_its_rows(
    db_path: Path, clock: FakeClock
) -> None:
    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend, clock=clock) as queue:
        for failures in (0, 0, 0, ALWAYS, 0):
            await enqueue(failures, False, 0.0, queue)
        await Worker(backend, clock=clock).run_until_idle()
        await queue.cancel(await queue.enqueue(fail_then_succeed, 0))
        await queue.enqueue(fail_then_succeed, 0)  # still queued
    with sqlite3.connect(db_path) as conn:  # as sitq 4 left it: no counters, version 4
        for name in counting.COUNTS_TRIGGERS:
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE sitq_counts")
        conn.execute("UPDATE sitq_meta SET value = '4' WHERE key = 'schema_version'")
        conn.execute("DELETE FROM sitq_tasks WHERE status = 'succeeded' AND seq = 1")
    expected = counted_by_hand(db_path)
    assert expected[TaskStatus.SUCCEEDED] == 3 and expected[TaskStatus.FAILED] == 1
    async with TaskQueue(SQLiteBackend(db_path, read_only=True)) as reader:
        assert await reader.counts() == expected  # not upgraded: every row counted
    async with TaskQueue(SQLiteBackend(db_path), clock=clock) as queue:
        assert await queue.counts() == expected
        await Worker(queue.backend, clock=clock).run_until_idle()
        assert await queue.counts() == counted_by_hand(db_path)
    with sqlite3.connect(db_path) as conn:
        version = conn.execute("SELECT value FROM sitq_meta WHERE key = 'schema_version'")
        assert int(version.fetchone()[0]) == SCHEMA_VERSION


async def test_counts_read_no_finished_row(db_path: Path) -> None:
    """The plan: the counter table scanned, sitq_tasks only searched by status (the
    unfinished ones), so the finished rows kept never enter the cost."""
    async with TaskQueue(SQLiteBackend(db_path)):
        pass
    with sqlite3.connect(db_path) as conn:
        plan = [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + counting.COUNTS)]
    assert "SCAN sitq_counts" in plan
    tasks = [step for step in plan if "sitq_tasks" in step]
    assert tasks and all(step.startswith("SEARCH") for step in tasks), plan
