"""The reworked engine, seen from its data: the retry budget in columns, the claim's index
and order, retention, batched settles, round trips per operation, and pickup by a worker
in another process.

Real SQLite files in tmp_path, a FakeClock, and `worker.run_once()`/`run_until_idle()`;
plain `sqlite3` reads the file the way a user with the sqlite3 shell would.
"""

from __future__ import annotations

import asyncio
import random
import re
import sqlite3
import statistics
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from trip_counting import Trips, counting_trips

import sitq
from sitq import FakeClock, RetryPolicy, SQLiteBackend, TaskQueue, TaskStatus, Worker
from sitq.backends.base import Settlement
from sitq.backends.sqlite import sql as sqlite_sql
from sitq.engine.context import current_task
from sitq.policy import state
from sitq.task import Attempt

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL

LEASE = 30.0


async def flaky(fail_first: int) -> str:
    """Fails its first `fail_first` attempts, then succeeds."""
    if current_task().attempt <= fail_first:
        raise ValueError(f"attempt {current_task().attempt} fails on purpose")
    return "ok"


async def boom() -> None:
    raise ValueError("always fails")


async def quick(i: int) -> int:
    await asyncio.sleep(0)
    return i


@sitq.task(retry=RetryPolicy.fixed(1, max_attempts=4))
async def decorated() -> str:
    return "ok"


def rows(db: Path, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file with plain sqlite3: no sitq code, no unpickling."""
    with sqlite3.connect(db) as conn:
        return conn.execute(query, params).fetchall()


@pytest.fixture
async def pair(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock
) -> AsyncIterator[tuple[TaskQueue, Worker]]:
    worker = Worker(backend, clock=clock, rng=random.Random(0), worker_id="w1")
    yield queue, worker
    await worker.stop()


# -- the retry budget as data ---------------------------------------------------------------


async def test_retry_budget_is_stored_in_columns_at_enqueue(
    queue: TaskQueue, db_path: Path
) -> None:
    policy = RetryPolicy.exponential(1, max_attempts=5)
    task_id = await queue.with_options(retry=policy).enqueue(flaky, 0)
    [(max_attempts, description)] = rows(
        db_path, "SELECT max_attempts, retry_policy FROM sitq_tasks WHERE id = ?", (task_id,)
    )
    assert max_attempts == 5
    assert "exponential" in description


async def test_a_task_without_a_policy_gets_the_workers_budget_at_claim(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock, db_path: Path
) -> None:
    task_id = await queue.enqueue(flaky, 0)
    query = "SELECT max_attempts, retry_policy FROM sitq_tasks WHERE id = ?"
    assert rows(db_path, query, (task_id,)) == [(None, None)]
    worker = Worker(backend, clock=clock, retry=RetryPolicy.fixed(1, max_attempts=3))
    try:
        assert await worker.run_once() == 1
    finally:
        await worker.stop()
    [(max_attempts, description)] = rows(db_path, query, (task_id,))
    assert max_attempts == 3
    assert "fixed" in description


async def test_attempt_text_counts_against_the_budget(
    pair: tuple[TaskQueue, Worker], clock: FakeClock
) -> None:
    queue, worker = pair
    policy = RetryPolicy.fixed(10, max_attempts=5)
    task_id = await queue.with_options(retry=policy).enqueue(flaky, 99)
    assert await worker.run_once() == 1
    clock.advance(10)
    assert await worker.run_once() == 1
    info = await queue.get_task(task_id)
    assert info.status is TaskStatus.RETRYING
    assert info.attempt_text == "attempt 2 of 5"


async def test_result_shows_attempts_of_the_budget(pair: tuple[TaskQueue, Worker]) -> None:
    queue, worker = pair
    policy = RetryPolicy.fixed(1, max_attempts=5)
    task_id = await queue.with_options(retry=policy).enqueue(flaky, 1)
    await worker.run_until_idle()
    result = await queue.get_result(task_id, timeout=0)
    assert result is not None and result.is_success()
    assert (result.attempts, result.max_attempts) == (2, 5)
    assert "2 of 5" in result._repr_html_()


async def test_decorated_budget_is_stored_and_a_call_option_beats_it(
    queue: TaskQueue, db_path: Path
) -> None:
    from_decorator = await queue.enqueue(decorated)
    per_call = await queue.with_options(retry=RetryPolicy.fixed(1, max_attempts=2)).enqueue(
        decorated
    )
    query = "SELECT max_attempts FROM sitq_tasks WHERE id = ?"
    assert rows(db_path, query, (from_decorator,)) == [(4,)]
    assert rows(db_path, query, (per_call,)) == [(2,)]


# -- the claim's plan: an index in claim order, no sort ----------------------------------------


def inner_select(statement: str) -> str:
    """The `SELECT ... LIMIT :limit` inside a claim's `WHERE seq IN (...)`."""
    found = re.search(r"WHERE seq IN \(\s*(SELECT .*?LIMIT :limit)\s*\)", statement, re.S)
    assert found, statement
    return found.group(1)


def query_plan(db: Path, statement: str, params: dict[str, Any]) -> str:
    with sqlite3.connect(db) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {statement}", params).fetchall()
    return "\n".join(str(row[-1]) for row in plan)


async def test_claim_uses_its_index_and_never_sorts(queue: TaskQueue, db_path: Path) -> None:
    await queue.enqueue_many([(quick, (i,)) for i in range(200)])
    params = {"now": 2e9, "limit": 10}
    plan = query_plan(db_path, inner_select(sqlite_sql.CLAIM_DUE), params)
    assert "USE TEMP B-TREE" not in plan, plan
    assert "sitq_tasks_claim" in plan, plan
    whole = {**params, "lease_until": 3e9, "worker_id": "w1", "default_max": None}
    whole_plan = query_plan(db_path, sqlite_sql.CLAIM_DUE, {**whole, "default_policy": None})
    assert "USE TEMP B-TREE" not in whole_plan, whole_plan


async def test_claims_of_one_two_and_many_take_the_same_tasks_in_the_same_order(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock
) -> None:
    """Claims of every size take what is due in claim order: priority, due time, FIFO."""
    low = await queue.with_options(priority=0).enqueue(quick, 0)
    high = [await queue.with_options(priority=5).enqueue(quick, i) for i in (1, 2)]
    later = await queue.with_options(delay=60).enqueue(quick, 3)
    rest = await queue.enqueue_many([(quick, (i,)) for i in range(4, 9)])
    first = await backend.claim("w1", 1, clock.now, LEASE)
    assert [t.task_id for t in first] == high[:1]
    two = await backend.claim("w1", 2, clock.now, LEASE)
    assert [t.task_id for t in two] == [high[1], low]
    many = await backend.claim("w1", 10, clock.now, LEASE)
    assert [t.task_id for t in many] == rest  # the delayed one is not due
    assert later not in {t.task_id for t in first + two + many}
    assert {t.attempt for t in first + two + many} == {1}


async def test_takeover_finds_expired_leases_by_their_index(
    queue: TaskQueue, db_path: Path
) -> None:
    await queue.enqueue(quick, 1)
    params = {"expired_before": 2e9, "limit": 10, "held": "[]", "default_max": 1}
    for statement in (sqlite_sql.TAKE_OVER, sqlite_sql.END_SPENT):
        plan = query_plan(db_path, inner_select(statement), params)
        assert "sitq_tasks_leased" in plan, plan
        assert "USE TEMP B-TREE" not in plan, plan


# -- claim order and batch size ---------------------------------------------------------------


async def test_claim_order_is_priority_then_due_time_then_fifo(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock
) -> None:
    rng = random.Random(42)
    now = clock.now()
    expected: list[tuple[int, float, int, str]] = []
    for index in range(60):
        priority, due_at = rng.choice([0, 1, 5]), now - rng.choice([0, 10, 20])
        task_id = await queue.with_options(priority=priority, eta=due_at).enqueue(quick, index)
        expected.append((-priority, due_at, index, task_id))
    later = await queue.with_options(priority=100, delay=60).enqueue(quick, -1)
    order = [task_id for *_, task_id in sorted(expected)]
    batches: list[list[str]] = []
    while batch := await backend.claim("w1", 7, clock.now(), LEASE):
        batches.append([task.task_id for task in batch])
        assert len(batch) == min(7, 60 - 7 * (len(batches) - 1))
    # each claim takes the next 7, listed in claim order too: a worker starts a claim's
    # tasks in list order and keeps the last ones in hand (claim ahead)
    assert batches == [order[start : start + 7] for start in range(0, 60, 7)]
    assert later not in {task_id for batch in batches for task_id in batch}  # not due yet


# -- retention ----------------------------------------------------------------------------------


async def finished_tasks(queue: TaskQueue, worker: Worker) -> dict[str, str]:
    """One succeeded, one failed (a dead letter) and one cancelled task, finished now."""
    ids = {
        "succeeded": await queue.enqueue(quick, 1),
        "failed": await queue.enqueue(boom),
        "cancelled": await queue.with_options(delay=5).enqueue(quick, 2),
    }
    assert await queue.cancel(ids["cancelled"])
    assert await worker.run_until_idle() == 2
    return ids


def task_ids_in(db: Path, table: str, column: str) -> set[str]:
    return {row[0] for row in rows(db, f"SELECT {column} FROM {table}")}


async def test_prune_removes_old_finished_tasks_with_their_history_but_keeps_dead_letters(
    backend: SQLiteBackend,
    pair: tuple[TaskQueue, Worker],
    clock: FakeClock,
    db_path: Path,
) -> None:
    queue, worker = pair
    old = await finished_tasks(queue, worker)
    clock.advance(3601)
    recent = await finished_tasks(queue, worker)
    assert await backend.prune(3600, clock.now, 100) == 2
    kept = {old["failed"], *recent.values()}
    assert task_ids_in(db_path, "sitq_tasks", "id") == kept
    assert task_ids_in(db_path, "sitq_attempts", "task_id") == {
        old["failed"],
        recent["succeeded"],
        recent["failed"],
    }


async def test_prune_works_in_batches_of_the_given_limit(
    backend: SQLiteBackend, pair: tuple[TaskQueue, Worker], clock: FakeClock
) -> None:
    queue, worker = pair
    await queue.enqueue_many([(quick, (i,)) for i in range(25)])
    assert await worker.run_until_idle() == 25
    clock.advance(10)
    assert [await backend.prune(5, clock.now, 10) for _ in range(4)] == [10, 10, 5, 0]
    assert (await queue.counts())[TaskStatus.SUCCEEDED] == 0


async def test_a_running_worker_prunes_by_its_retention(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock, db_path: Path
) -> None:
    runner = Worker(backend, clock=clock, worker_id="runner")
    try:
        old = await finished_tasks(queue, runner)
    finally:
        await runner.stop()
    clock.advance(3601)
    recent = await queue.enqueue(quick, 3)
    worker = Worker(backend, clock=clock, retention=3600, worker_id="pruner")
    await worker.start()
    try:
        # the started loop runs `recent`, then, idle, prunes; wait for that with a deadline
        await until(lambda: len(task_ids_in(db_path, "sitq_tasks", "id")) == 2, timeout=10)
    finally:
        await worker.stop()
    assert task_ids_in(db_path, "sitq_tasks", "id") == {old["failed"], recent}
    assert old["succeeded"] not in task_ids_in(db_path, "sitq_attempts", "task_id")


async def until(condition: Callable[[], bool], timeout: float) -> None:
    """Wait for a condition another task makes true, checking every 10 ms, or fail."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# -- settling in batches --------------------------------------------------------------------


async def test_outcomes_of_concurrent_tasks_are_settled_in_batches(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock
) -> None:
    worker = Worker(backend, clock=clock, concurrency=10, worker_id="w1")
    try:
        ids = await queue.enqueue_many([(quick, (i,)) for i in range(10)])
        assert await worker.run_once() == 10
        batches = worker.pipeline.batches
    finally:
        await worker.stop()
    assert 1 <= batches < 10
    history = await queue.history()
    assert sorted(a.task_id for a in history) == sorted(ids)  # each settled exactly once
    assert {a.outcome for a in history} == {"succeeded"}
    assert (await queue.counts())[TaskStatus.SUCCEEDED] == 10


# -- round trips to the connection's thread -------------------------------------------------


@pytest.fixture
def trips(backend: SQLiteBackend) -> Iterator[Trips]:
    """Count the passes of the connection's thread (the connection is real)."""
    with counting_trips(backend) as counted:
        yield counted


@pytest.mark.sqlite_only  # counts trips into the connection's thread
async def test_one_trip_per_enqueue_claim_and_settle_batch(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock, trips: Trips
) -> None:
    await queue.enqueue(quick, 0)
    assert trips.count == 1, trips
    await queue.enqueue_many([(quick, (i,)) for i in range(1, 10)])
    assert trips.count == 2, trips

    trips.clear()
    claimed = await backend.claim("w1", 10, clock.now, LEASE)
    assert len(claimed) == 10
    assert trips.count == 1, trips

    trips.clear()
    now = clock.now()
    settlements = [
        Settlement(
            task.task_id,
            task.token,
            state.SUCCEEDED.status,
            now,
            result=b"",
            attempt=Attempt(
                task.task_id,
                task.name,
                task.attempt,
                "w1",
                task.scheduled_for,
                now,
                now,
                "succeeded",
            ),
        )
        for task in claimed
    ]
    assert await backend.settle(settlements) == [True] * 10
    assert trips.count == 1, trips
    assert len(await queue.history()) == 10


@pytest.mark.sqlite_only  # counts trips into the connection's thread
async def test_a_worker_pass_costs_one_claim_and_one_trip_per_settle_batch(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock, trips: Trips
) -> None:
    await queue.enqueue_many([(quick, (i,)) for i in range(10)])
    worker = Worker(backend, clock=clock, concurrency=10, worker_id="w1")
    try:
        trips.clear()
        assert await worker.run_once() == 10
        batches = worker.pipeline.batches
        # A deterministic step also reads the schedules once (periodic ticks due now).
        assert trips.count == 1 + batches + 1, trips
    finally:
        await worker.stop()


# -- pickup by an idle worker in another process -----------------------------------------------

PICKUP_TASKS = """
def noop(i):
    return i
"""
PICKUPS = 5


async def test_an_idle_worker_in_another_process_picks_up_work_at_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pickup_tasks.py").write_text(textwrap.dedent(PICKUP_TASKS))
    db = tmp_path / "pickup.db"
    sys.path.insert(0, str(tmp_path))
    command = [sys.executable, "-m", "sitq", "worker", str(db), "--create"]
    command += ["--import", "pickup_tasks", "--concurrency", "1"]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        import pickup_tasks  # type: ignore[import-not-found]

        assert process.stdout is not None
        ready = await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), 60)
        assert "ready" in ready, ready
        gaps = []
        async with TaskQueue(SQLiteBackend(db)) as queue:
            for i in range(PICKUPS + 1):  # the first one warms both sides up
                await asyncio.sleep(0.2)  # the scenario: the worker has been idle a while
                task_id = await queue.enqueue(pickup_tasks.noop, i)
                result = await queue.get_result(task_id, timeout=30)
                assert result is not None and result.value == i
                [attempt] = await queue.history(task_id)
                info = await queue.get_task(task_id)
                gaps.append(attempt.started_at - info.enqueued_at)
    finally:
        process.terminate()
        process.wait(timeout=30)
        sys.path.remove(str(tmp_path))
        sys.modules.pop("pickup_tasks", None)
    measured = gaps[1:]
    with capsys.disabled():
        print(
            f"\ncross-process pickup over {PICKUPS} tasks: median "
            f"{statistics.median(measured) * 1000:.1f} ms, max {max(measured) * 1000:.1f} ms"
        )
    assert max(measured) < 0.5, measured


def test_task_ids_made_in_a_batch_are_distinct_version_4_uuids() -> None:
    import uuid

    from sitq.engine.queue import new_task_ids

    ids = new_task_ids(2000)
    assert len(set(ids)) == 2000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)
    assert all(uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)
    assert new_task_ids(0) == []
