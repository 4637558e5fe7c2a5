"""Issue 4, point 1: a task's status through its life, counts by status, and progress
reported from inside a running task, seen from outside while it runs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import sitq
from sitq import (
    TERMINAL,
    FakeClock,
    RetryPolicy,
    TaskNotFoundError,
    TaskQueue,
    TaskStatus,
    Worker,
)

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL

# Tasks run in this process and reach module-level state by reference (see test_worker.py):
# a test holds a task in the middle of its run with these events, made fresh per test
# because an asyncio.Event belongs to the loop that first waits on it.
GATE: dict[str, asyncio.Event] = {}
SEEN: dict[str, object] = {}


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    GATE.update(started=asyncio.Event(), release=asyncio.Event())
    SEEN.clear()
    yield
    GATE.clear()
    SEEN.clear()


async def held_task(rows: int) -> int:
    """Report progress, wait until the report is stored, then hold until released."""
    sitq.report_progress(0.4, f"parsed {rows * 4 // 10} rows")
    await sitq.current_task().flush_progress()
    GATE["started"].set()
    await GATE["release"].wait()
    return rows


async def look_at_myself() -> str:
    """Ask the queue for this task's own status, from inside the task."""
    me = sitq.current_task()
    queue = SEEN["queue"]
    assert isinstance(queue, TaskQueue)
    SEEN["status"] = await queue.status(me.task_id)
    SEEN["context"] = (me.task_id, me.task_name, me.attempt)
    return "looked"


async def fails_first_time() -> str:
    if sitq.current_task().attempt == 1:
        raise ConnectionError("first try fails")
    return "second try works"


async def always_fails() -> None:
    raise ValueError("never works")


async def quick() -> str:
    return "ok"


def test_status_values_and_terminal_set() -> None:
    assert [s.value for s in TaskStatus] == [
        "blocked", "queued", "scheduled", "running", "retrying", "succeeded", "failed", "cancelled",
    ]  # fmt: skip
    assert {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED} == TERMINAL
    assert TaskStatus("running") is TaskStatus.RUNNING and TaskStatus.RUNNING == "running"


async def test_running_is_seen_from_inside_the_task(queue: TaskQueue, worker: Worker) -> None:
    SEEN["queue"] = queue
    task_id = await queue.enqueue(look_at_myself)
    assert await queue.status(task_id) is TaskStatus.QUEUED

    await worker.run_until_idle()

    assert SEEN["status"] is TaskStatus.RUNNING
    assert SEEN["context"] == (task_id, "look_at_myself", 1)
    assert await queue.status(task_id) is TaskStatus.SUCCEEDED


async def test_progress_is_visible_while_the_task_runs(queue: TaskQueue, worker: Worker) -> None:
    task_id = await queue.enqueue(held_task, 100)
    run = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(GATE["started"].wait(), timeout=5)

    info = await queue.get_task(task_id)
    assert info.status is TaskStatus.RUNNING
    assert await queue.status(task_id) is TaskStatus.RUNNING
    assert (info.progress, info.progress_message) == (0.4, "parsed 40 rows")
    assert info.worker_id == "w1" and info.attempts == 1

    GATE["release"].set()
    assert await run == 1
    result = await queue.get_result(task_id, timeout=5)
    assert result is not None and result.value == 100
    assert await queue.status(task_id) is TaskStatus.SUCCEEDED


async def test_delayed_task_is_scheduled_until_due(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    task_id = await queue.with_options(delay=30).enqueue(quick)
    assert await queue.status(task_id) is TaskStatus.SCHEDULED
    assert await worker.run_once() == 0  # not due yet

    clock.advance(30)
    assert await worker.run_once() == 1
    assert await queue.status(task_id) is TaskStatus.SUCCEEDED


async def test_failed_attempt_waits_as_retrying_then_succeeds(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    policy = RetryPolicy.fixed(10, max_attempts=2)
    task_id = await queue.with_options(retry=policy).enqueue(fails_first_time)

    assert await worker.run_once() == 1
    info = await queue.get_task(task_id)
    assert info.status is TaskStatus.RETRYING
    assert info.error_type == "ConnectionError" and info.due_at == clock.now() + 10

    clock.advance(10)
    await worker.run_once()
    assert await queue.status(task_id) is TaskStatus.SUCCEEDED


async def test_dead_letter_is_failed_and_cancelled_is_cancelled(
    queue: TaskQueue, worker: Worker
) -> None:
    dead = await queue.enqueue(always_fails)
    await worker.run_until_idle()
    waiting = await queue.with_options(delay=60).enqueue(quick)
    assert await queue.cancel(waiting) is True

    assert await queue.status(dead) is TaskStatus.FAILED
    assert await queue.status(waiting) is TaskStatus.CANCELLED
    assert await queue.cancel(dead) is False  # already finished


async def test_counts_lists_every_state(queue: TaskQueue, worker: Worker) -> None:
    assert await queue.counts() == {status: 0 for status in TaskStatus}

    for func in (quick, quick, always_fails):
        await queue.enqueue(func)
    await worker.run_until_idle()
    await queue.enqueue(quick)
    await queue.with_options(delay=5).enqueue(quick)

    counts = await queue.counts()
    assert set(counts) == set(TaskStatus)
    assert counts[TaskStatus.SUCCEEDED] == 2
    assert counts[TaskStatus.FAILED] == 1
    assert counts[TaskStatus.QUEUED] == 1
    assert counts[TaskStatus.SCHEDULED] == 1
    assert sum(counts.values()) == 5


async def test_counts_while_a_task_runs(queue: TaskQueue, worker: Worker) -> None:
    await queue.enqueue(held_task, 10)
    quick_id = await queue.enqueue(quick)
    run = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(GATE["started"].wait(), timeout=5)
    assert await queue.get_result(quick_id, timeout=5) is not None  # the other one is done

    counts = await queue.counts()
    assert counts[TaskStatus.RUNNING] == 1

    GATE["release"].set()
    await run
    assert (await queue.counts())[TaskStatus.SUCCEEDED] == 2


async def test_status_of_an_unknown_task(queue: TaskQueue) -> None:
    with pytest.raises(TaskNotFoundError):
        await queue.status("no-such-task")


def test_current_task_outside_a_task_says_so() -> None:
    with pytest.raises(LookupError, match="outside a sitq task"):
        sitq.current_task()
    with pytest.raises(LookupError):
        sitq.report_progress(0.5)
