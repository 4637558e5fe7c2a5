"""Leases, fencing tokens and graceful stop, in one process and virtual time.

The process tests (test_reliability.py) show the promise holding for real; these pin down
each rule on its own, fast and deterministic: a worker that stalls is simulated by claiming
a task under a made-up worker id and moving a FakeClock past the lease.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from worker_processes import wait_until

from sitq import FakeClock, RetryPolicy, SQLiteBackend, TaskQueue, TaskStatus, Worker
from sitq.backends.base import ClaimedTask, Settlement

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL


async def double(x: int) -> int:
    return 2 * x


async def park() -> None:
    """A task that runs until cancelled."""
    await asyncio.Event().wait()


async def test_a_lost_attempt_counts_against_the_retry_policy(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a task without retries whose worker vanished holding its lease, when another
    worker finds the expired lease, then the task fails for good as a dead letter whose
    error says WorkerLost, and the history records the lost attempt."""
    clock = FakeClock()
    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend, clock=clock) as queue:
        task_id = await queue.enqueue(double, 1)
        [claimed] = await backend.claim("ghost", 1, clock.now(), lease_seconds=10)
        clock.advance(11)
        worker = Worker(backend, clock=clock, worker_id="w2", retry=RetryPolicy(max_attempts=1))
        with caplog.at_level(logging.ERROR, logger="sitq"):
            await worker.run_until_idle()
        await worker.stop()
        [dead] = await queue.dead_letters()
        [lost] = await queue.history(task_id)

    assert claimed.task_id == task_id == dead.task_id
    assert (dead.error_type, dead.attempts) == ("WorkerLost", 1)
    assert "ghost" in (dead.error or "")
    assert (lost.outcome, lost.worker_id, lost.attempt) == ("worker_lost", "ghost", 1)
    assert "failed for good after attempt 1: WorkerLost" in caplog.text


async def test_a_stale_owner_cannot_overwrite_the_new_owners_outcome(db_path: Path) -> None:
    """Given a task taken over from a stalled worker and completed by the new owner, when
    the stalled worker wakes and reports with its old fencing token, then its settlement
    and its heartbeat are refused, and the new owner's outcome stands."""
    clock = FakeClock()
    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend, clock=clock) as queue:
        task_id = await queue.enqueue(double, 21)
        [stale] = await backend.claim("stalled", 1, clock.now(), lease_seconds=10)
        clock.advance(11)
        retry = RetryPolicy.fixed(0, max_attempts=2)
        worker = Worker(backend, clock=clock, worker_id="w2", retry=retry)
        await worker.run_until_idle()
        await worker.stop()

        late = Settlement(task_id, stale.token, TaskStatus.FAILED, clock.now(), error="late")
        assert await backend.settle([late]) == [False]
        assert await backend.renew_leases([(task_id, stale.token)], clock.now(), 10) == {task_id}
        result = await queue.get_result(task_id, timeout=1)
        history = await queue.history(task_id)

    assert result is not None and (result.status, result.value) == (TaskStatus.SUCCEEDED, 42)
    assert [(a.worker_id, a.outcome) for a in history] == [
        ("stalled", "worker_lost"),
        ("w2", "succeeded"),
    ]


class ClaimWatcher(SQLiteBackend):
    """The real SQLite backend, plus an event set once a claim statement is in flight."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.claiming = asyncio.Event()

    async def claim(self, *args: Any, **kwargs: Any) -> list[ClaimedTask]:
        self.claiming.set()  # no await before the query is sent: it is in flight when seen
        return await super().claim(*args, **kwargs)


async def test_stop_during_a_claim_strands_no_task(db_path: Path) -> None:
    """Given a worker whose claim is in flight, when stop() is called, then the tasks that
    claim leased are run or handed back, never left running with no worker."""
    backend = ClaimWatcher(db_path)
    async with TaskQueue(backend) as queue:
        task_id = await queue.enqueue(park)
        worker = Worker(backend, worker_id="w1", shutdown_grace=0)
        await worker.start()
        await backend.claiming.wait()  # the loop's first claim, which takes the task
        await worker.stop()
        info = await queue.get_task(task_id)

    assert (info.status, info.attempts) == (TaskStatus.QUEUED, 0)


async def test_stop_hands_back_a_running_task_without_using_an_attempt(db_path: Path) -> None:
    """Given a task still running when the grace period ends, when the worker stops, then
    the task is queued again with its attempt refunded and no history record."""
    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend) as queue:
        task_id = await queue.enqueue(park)
        worker = Worker(backend, worker_id="w1")
        await worker.start()

        async def running() -> bool:
            return (await queue.status(task_id)) is TaskStatus.RUNNING

        await wait_until(running, 10, "the task to start")
        await worker.stop(grace=0.05)
        info = await queue.get_task(task_id)
        history = await queue.history(task_id)

    assert (info.status, info.attempts, history) == (TaskStatus.QUEUED, 0, [])
