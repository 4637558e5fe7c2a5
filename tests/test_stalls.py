"""A stalled worker's finished tasks are not dead letters (issue 21, point 5b).

One async task blocks its worker's event loop (`time.sleep` inside `async def`), so the
worker's heartbeat cannot renew any lease, and another worker process declares all six
tasks lost. The five well-behaved neighbours, and the blocker itself, still complete
once the loop runs again: their outcomes replace the WorkerLost verdicts
(`state.LATE_OUTCOME_REPLACES`), and the history keeps one record per attempt.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from backends import Database
from worker_processes import WorkerProcess

from sitq import (
    Attempt,
    FakeClock,
    RetryPolicy,
    SQLiteBackend,
    TaskQueue,
    TaskStatus,
    Worker,
)
from sitq.backends.base import ClaimedTask, Settlement
from sitq.policy import state
from sitq.wire.serialization import CloudpickleSerializer


async def neighbour(n: int) -> int:
    await asyncio.sleep(0.5)  # well-behaved: awaits, and is done while the loop is blocked
    return n


async def blocks_the_loop_until_all_are_declared_lost(db: str, tasks: int) -> str:
    """Block the event loop (a real `time.sleep`, as a careless task does) until another
    worker has declared every task lost, or 30 s have passed."""
    await asyncio.sleep(0.2)  # the neighbours start first
    deadline = time.monotonic() + 30
    with sqlite3.connect(db) as conn:
        query = "SELECT count(*) FROM sitq_tasks WHERE status <> 'running'"
        while conn.execute(query).fetchone()[0] < tasks and time.monotonic() < deadline:
            time.sleep(0.05)  # the loop stays blocked: that is the point of this task
    return "unblocked"


async def test_finished_tasks_of_a_stalled_worker_are_not_dead_letters(tmp_path: Path) -> None:
    """Given six tasks under 1 s leases on a worker whose loop one of them blocks, when a
    worker process takes the expired leases over (no retries: WorkerLost dead letters),
    then every task still ends succeeded with its value, by its own worker, once the loop
    runs again, and each history holds that one attempt."""
    db = tmp_path / "queue.db"
    async with TaskQueue(SQLiteBackend(db)) as queue:
        ids = [await queue.enqueue(blocks_the_loop_until_all_are_declared_lost, str(db), 6)]
        ids += [await queue.enqueue(neighbour, n) for n in range(5)]
        owner = Worker(SQLiteBackend(db), lease_seconds=1, concurrency=6, worker_id="owner")
        await owner.start()
        rival = WorkerProcess(db, tmp_path / "log", tmp_path, "--lease", "1")
        try:
            await asyncio.to_thread(rival.wait_ready)
            deadline = time.monotonic() + 60
            while owner.processed < 6:  # all six done with in the owner
                assert time.monotonic() < deadline, f"{owner.processed} of 6 processed"
                await asyncio.sleep(0.02)
        finally:
            rival.kill()
            await owner.stop()  # and every outcome on its way is stored
        results = await queue.gather(ids, timeout=0)
        history = await queue.history()
    assert [(r.status, r.value) for r in results if r is not None] == [
        (TaskStatus.SUCCEEDED, "unblocked"),
        *[(TaskStatus.SUCCEEDED, n) for n in range(5)],
    ]
    assert sorted((a.task_id, a.worker_id, a.outcome) for a in history) == sorted(
        (task_id, "owner", "succeeded") for task_id in ids
    )


def late_success(claimed: ClaimedTask, value: int, now: float) -> Settlement:
    """What the stalled worker stores once its attempt finally completes."""
    record = Attempt(claimed.task_id, claimed.name, claimed.attempt, "stalled",
                     claimed.scheduled_for, claimed.claimed_at, now, "succeeded",
                     None, None, None)  # fmt: skip
    result = CloudpickleSerializer().encode_value(value, task_id=claimed.task_id)
    return Settlement(claimed.task_id, claimed.token, TaskStatus.SUCCEEDED, now,
                      result=result, attempt=record)  # fmt: skip


async def test_a_late_outcome_replaces_only_a_worker_lost_verdict(database: Database) -> None:
    """On each backend: the late outcome of a lost attempt replaces the WorkerLost dead
    letter its takeover made (and that attempt's record), while a task the takeover runs
    again refuses it: a task that runs again never gets two outcomes."""
    clock = FakeClock()
    backend = database.backend()
    budget = state.budget_of(None)
    async with TaskQueue(backend, clock=clock) as queue:
        dead = await queue.enqueue(neighbour, 1)
        retry = RetryPolicy.fixed(0, max_attempts=2)
        again = await queue.with_options(retry=retry).enqueue(neighbour, 2)
        held = {c.task_id: c for c in await backend.claim("stalled", 2, clock.now(), 10,
                                                          default_budget=budget)}  # fmt: skip
        clock.advance(11)
        taken = {c.task_id: c for c in await backend.claim("taker", 2, clock.now(), 10,
                                                           default_budget=budget)}  # fmt: skip
        late = [late_success(held[dead], 1, clock.now()), late_success(held[again], 2,
                                                                       clock.now())]  # fmt: skip
        accepted = await backend.settle(late)
        infos = await backend.get_tasks([dead, again])
        result = await queue.get_result(dead, timeout=0)
        history = {task_id: await queue.history(task_id) for task_id in (dead, again)}

    assert (taken[dead].decided, taken[again].decided) == (TaskStatus.FAILED, None)
    assert accepted == [True, False]
    assert result is not None and (result.status, result.value) == (TaskStatus.SUCCEEDED, 1)
    assert (infos[dead].attempts, infos[dead].error_type) == (1, None)
    assert [(a.attempt, a.worker_id, a.outcome) for a in history[dead]] == [
        (1, "stalled", "succeeded")
    ]
    assert (infos[again].status, infos[again].worker_id) == (TaskStatus.RUNNING, "taker")
    assert [(a.attempt, a.outcome) for a in history[again]] == [(1, "worker_lost")]
