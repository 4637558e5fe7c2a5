"""Unique tasks: `with_options(unique_key=...)`, one unfinished task per key, on every backend.

While a task with a key is unfinished (queued, scheduled, retrying, running:
`state.HOLDS_UNIQUE_KEY`), enqueueing another with that key returns the holder's id and
adds nothing. The database enforces it (a partial UNIQUE index), so two processes racing
on one key get one task and the same id. Once the holder finishes (succeeded, failed,
cancelled) the key is free again.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue as queue_module

import pytest
from backends import Database
from limit_tasks import enqueue_racing, invoice

from sitq import (
    Attempt,
    FakeClock,
    InvalidOptionError,
    RetryPolicy,
    TaskQueue,
    TaskStateError,
    TaskStatus,
    UniqueKeyTakenError,
    Worker,
    call,
    task,
)
from sitq.backends.base import Settlement
from sitq.options import MAX_UNIQUE_KEY
from sitq.policy import state

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL


async def fails() -> None:
    raise ValueError("no")


@task(unique_key="nightly-report")
async def nightly_report() -> str:
    return "done"


async def test_a_second_enqueue_of_an_unfinished_key_returns_the_first_id(
    queue: TaskQueue,
) -> None:
    first = await queue.with_options(unique_key="invoice-42").enqueue(invoice, 42)
    again = await queue.with_options(unique_key="invoice-42").enqueue(invoice, 43)
    other = await queue.with_options(unique_key="invoice-43").enqueue(invoice, 43)
    assert again == first
    assert other != first
    assert (await queue.counts())[TaskStatus.QUEUED] == 2


async def test_a_scheduled_or_running_task_holds_its_key(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    later = await queue.with_options(unique_key="k", delay=60).enqueue(invoice, 1)
    assert await queue.status(later) is TaskStatus.SCHEDULED
    assert await queue.with_options(unique_key="k").enqueue(invoice, 2) == later
    clock.advance(60)
    [claimed] = await queue.backend.claim("elsewhere", 1, clock.now(), 30.0)
    assert claimed.task_id == later
    assert await queue.with_options(unique_key="k").enqueue(invoice, 3) == later
    assert (await queue.counts())[TaskStatus.RUNNING] == 1


@pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled"])
async def test_once_the_holder_finishes_the_key_is_free_again(
    queue: TaskQueue, worker: Worker, ending: str
) -> None:
    func = fails if ending == "failed" else invoice
    options = queue.with_options(unique_key="k")
    first = await (options.enqueue(func) if func is fails else options.enqueue(invoice, 1))
    if ending == "cancelled":
        assert await queue.cancel(first)
    else:
        await worker.run_until_idle()
    assert (await queue.status(first)).value == ending
    second = await queue.with_options(unique_key="k").enqueue(invoice, 2)
    assert second != first
    assert await queue.status(second) is TaskStatus.QUEUED


async def test_a_retrying_task_holds_its_key_between_attempts(
    queue: TaskQueue, worker: Worker
) -> None:
    retry = RetryPolicy.fixed(10, max_attempts=3)
    first = await queue.with_options(unique_key="k", retry=retry).enqueue(fails)
    assert await worker.run_once() == 1
    assert await queue.status(first) is TaskStatus.RETRYING
    assert await queue.with_options(unique_key="k").enqueue(invoice, 2) == first


async def test_a_batch_with_one_key_twice_makes_one_task_and_both_get_its_id(
    queue: TaskQueue,
) -> None:
    """enqueue_many: the batch's first call of a key makes the task; a later call of the
    same key (in the batch, or after it) gets that task's id, like a second enqueue."""
    held = await queue.with_options(unique_key="held").enqueue(invoice, 0)
    ids = await queue.with_options(unique_key="batch").enqueue_many(
        [call(invoice, 1), call(invoice, 2)]
    )
    assert ids[0] == ids[1]
    mixed = await queue.with_options(unique_key="held").enqueue_many([call(invoice, 3)])
    assert mixed == [held]
    assert (await queue.counts())[TaskStatus.QUEUED] == 2
    info = await queue.get_task(ids[0])
    assert info.name == "invoice"


async def test_a_function_level_key_allows_one_unfinished_run_at_a_time(
    queue: TaskQueue, worker: Worker
) -> None:
    first = await queue.enqueue(nightly_report)
    assert await queue.enqueue(nightly_report) == first
    assert await queue.with_options(unique_key="other").enqueue(nightly_report) != first
    await worker.run_until_idle()
    assert await queue.enqueue(nightly_report) != first


async def test_requeue_of_a_dead_letter_whose_key_is_taken_is_refused_and_it_stays_dead(
    queue: TaskQueue, worker: Worker
) -> None:
    dead = await queue.with_options(unique_key="k").enqueue(fails)
    await worker.run_until_idle()
    holder = await queue.with_options(unique_key="k").enqueue(invoice, 1)
    with pytest.raises(UniqueKeyTakenError, match=f"held by unfinished task {holder}") as caught:
        await queue.requeue(dead)
    assert isinstance(caught.value, TaskStateError)  # the family requeue already raises
    assert (caught.value.task_id, caught.value.key, caught.value.holder) == (dead, "k", holder)
    assert await queue.status(dead) is TaskStatus.FAILED
    await worker.run_until_idle()  # the holder finishes: the key is free
    await queue.requeue(dead)
    assert await queue.status(dead) is TaskStatus.QUEUED
    assert await queue.with_options(unique_key="k").enqueue(invoice, 2) == dead


async def test_a_requeued_task_whose_key_is_free_holds_it_again(
    queue: TaskQueue, worker: Worker
) -> None:
    dead = await queue.with_options(unique_key="k").enqueue(fails)
    await worker.run_until_idle()
    await queue.requeue(dead)
    assert await queue.with_options(unique_key="k").enqueue(invoice, 1) == dead


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "non-empty"),
        ("   ", "non-empty"),
        ("a\x00b", "NUL"),
        (42, "must be a str"),
        (b"invoice-42", "must be a str"),
        ("x" * (MAX_UNIQUE_KEY + 1), f"over the limit of {MAX_UNIQUE_KEY}"),
    ],
)
async def test_a_bad_key_is_a_typed_error_before_anything_is_stored(
    queue: TaskQueue, key: object, message: str
) -> None:
    with pytest.raises(InvalidOptionError, match=message):
        await queue.with_options(unique_key=key).enqueue(invoice, 1)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match=message):
        task(unique_key=key)  # type: ignore[arg-type]
    assert sum((await queue.counts()).values()) == 0


async def test_the_longest_key_allowed_works(queue: TaskQueue) -> None:
    key = "é" * MAX_UNIQUE_KEY
    first = await queue.with_options(unique_key=key).enqueue(invoice, 1)
    assert await queue.with_options(unique_key=key).enqueue(invoice, 2) == first


async def test_two_enqueuer_processes_racing_on_each_key_make_one_task_and_get_one_id(
    database: Database,
) -> None:
    """Two real processes meet at a barrier before each of 20 keys, then enqueue under
    that key at the same moment: one task per key, and both processes get its id."""
    keys = [f"invoice-{n}" for n in range(20)]
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2, timeout=60)
    results = context.Queue()
    racers = [
        context.Process(target=enqueue_racing, args=(database.url, keys, barrier, results))
        for _ in range(2)
    ]
    for racer in racers:
        racer.start()
    try:
        got = [await asyncio.to_thread(results.get, timeout=120) for _ in racers]
    except queue_module.Empty:
        pytest.fail(f"an enqueuer gave no answer; exit codes {[r.exitcode for r in racers]}")
    finally:
        for racer in racers:
            await asyncio.to_thread(racer.join, 30)
            if racer.is_alive():
                racer.kill()
    assert got[0] == got[1]
    assert len(set(got[0])) == len(keys)
    async with TaskQueue(database.url) as queue:
        counts = await queue.counts()
    assert counts[TaskStatus.QUEUED] == sum(counts.values()) == len(keys)


async def test_a_late_outcome_never_makes_a_second_holder_of_a_key(
    queue: TaskQueue, clock: FakeClock
) -> None:
    """A task whose stalled worker was declared lost (a WorkerLost dead letter: its key is
    free, and another task takes it) may still send its outcome late. One that would make
    it wait again ("retrying") is refused, so the key keeps one holder, and the outcomes
    sent with it are stored all the same; a final one ("succeeded") replaces the dead letter
    as usual (`state.LATE_OUTCOME_REPLACES`)."""
    backend = queue.backend
    budget = state.budget_of(None)
    lost = await queue.with_options(unique_key="k").enqueue(invoice, 1)
    [held] = await backend.claim("stalled", 1, clock.now(), 4.0, default_budget=budget)
    clock.advance(5)
    [ended] = await backend.claim("other", 1, clock.now(), 4.0, default_budget=budget)
    assert ended.decided is TaskStatus.FAILED
    holder = await queue.with_options(unique_key="k").enqueue(invoice, 2)
    [running] = await backend.claim("w", 1, clock.now(), 4.0, default_budget=budget)
    assert (held.task_id, running.task_id) == (lost, holder)

    def late(status: TaskStatus, outcome: str) -> Settlement:
        record = Attempt(lost, "invoice", 1, "stalled", held.scheduled_for, held.claimed_at,
                         clock.now(), outcome)  # fmt: skip
        due = clock.now() + 1 if status is TaskStatus.RETRYING else None
        return Settlement(lost, held.token, status, clock.now(), due_at=due, attempt=record)

    done = Settlement(holder, running.token, TaskStatus.SUCCEEDED, clock.now())
    assert await backend.settle([late(TaskStatus.RETRYING, "retrying"), done]) == [False, True]
    assert await queue.status(lost) is TaskStatus.FAILED
    assert await queue.status(holder) is TaskStatus.SUCCEEDED
    assert await backend.settle([late(TaskStatus.SUCCEEDED, "succeeded")]) == [True]
    assert await queue.status(lost) is TaskStatus.SUCCEEDED


# -- a store made by the sitq before unique keys is upgraded in place ------------------------


async def test_a_store_from_before_unique_keys_gains_them_when_it_is_opened(
    database: Database,
) -> None:
    """Take a fresh store back to the schema before this change (no unique_key column, no
    index, no rate table, the older version number), with a task in it: opening it again
    upgrades it, the old task is kept, and unique keys and rate slots work."""
    async with TaskQueue(database.url) as queue:
        old_task = await queue.enqueue(invoice, 1)
    await _downgrade(database)
    async with TaskQueue(database.url) as queue:
        assert await queue.status(old_task) is TaskStatus.QUEUED
        first = await queue.with_options(unique_key="k").enqueue(invoice, 2)
        assert await queue.with_options(unique_key="k").enqueue(invoice, 3) == first
        assert await queue.backend.take_rate_slot("f", 1, 1.0, 0.0, first) is None


async def _downgrade(database: Database) -> None:
    if database.kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(database.url, isolation_level=None)
        conn.execute("DROP INDEX sitq_tasks_unique")
        conn.execute("DROP TABLE sitq_rate_starts")
        conn.execute("ALTER TABLE sitq_tasks DROP COLUMN unique_key")
        conn.execute("UPDATE sitq_meta SET value = '3' WHERE key = 'schema_version'")
        conn.close()
        return
    import asyncpg
    from backends import POSTGRES_URL

    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        schema = f'"{database.schema}"'
        await conn.execute(f"DROP TABLE {schema}.sitq_rate_starts")
        await conn.execute(f"ALTER TABLE {schema}.sitq_tasks DROP COLUMN unique_key")
        await conn.execute(f"UPDATE {schema}.sitq_meta SET value = '1'")
    finally:
        await conn.close()
