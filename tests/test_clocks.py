"""Leases and retention when clocks disagree or step (issue 21, point 4).

On PostgreSQL, workers on several machines read several clocks: a worker whose clock is
ahead must not take over the live leases of healthy workers, nor prune results seconds
old. The server's clock decides. On SQLite every worker shares the machine's clock; when
it *steps* forward, every lease looks older at once: a worker discounts the step for a
lease period (a retention period for pruning), so live holders keep their tasks.

A machine whose clock is ahead, or steps, is a `SystemClock` reading real time plus an
offset the test sets (the real machine clock is shared with other programs: not ours to set).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from backends import discard, make_database
from worker_processes import wait_until

from sitq import SQLiteBackend, SystemClock, TaskQueue, TaskStatus, Worker
from sitq.backends import Backend
from sitq.engine.retention import DEFAULT_RETENTION, Pruner

DAY = 86400.0


@dataclass
class Machine:
    """A machine's wall clock: real time plus `ahead` seconds (set it to step the clock)."""

    ahead: float = 0.0


class MachineClock(SystemClock):
    """A SystemClock on `machine`: what a worker there reads."""

    def __init__(self, machine: Machine) -> None:
        super().__init__()
        self.machine = machine

    def now(self) -> float:
        return time.time() + self.machine.ahead


async def wait_for_file(path: str) -> str:
    """A task that runs until `path` exists (the test's way to let it finish)."""
    while not Path(path).exists():
        await asyncio.sleep(0.01)
    return "done"


async def add(a: int, b: int) -> int:
    return a + b


async def running(queue: TaskQueue, task_id: str) -> None:
    async def is_running() -> bool:
        return (await queue.get_task(task_id)).status is TaskStatus.RUNNING

    await wait_until(is_running, 20, "the task to run")


async def check_holder_keeps_its_task(
    backend: Backend, gate: Path, claimer_clock: SystemClock, step: Machine | None = None
) -> None:
    """A healthy worker runs a task under a 30 s lease; another worker on `claimer_clock`
    looks for work (then the shared clock steps by 60 s if `step` is given) and looks again:
    it must take nothing, and the holder's outcome is the task's only attempt."""
    async with TaskQueue(backend) as queue:
        task_id = await queue.enqueue(wait_for_file, str(gate))
        holder = Worker(backend, worker_id="holder", lease_seconds=30,
                        clock=MachineClock(step) if step else None)  # fmt: skip
        claimer = Worker(backend, worker_id="claimer", lease_seconds=30, clock=claimer_clock)
        holding = asyncio.create_task(holder.run_once())
        await running(queue, task_id)
        assert await claimer.run_once() == 0
        if step is not None:
            step.ahead += 60  # the machine's clock steps forward a minute
        assert await claimer.run_once() == 0  # the holder is alive: its lease is not expired
        gate.touch()
        assert await holding == 1
        result = await queue.get_result(task_id, timeout=10)
        history = await queue.history(task_id)
        await claimer.stop()
        await holder.stop()
    assert result is not None and result.value == "done"
    assert [(a.worker_id, a.outcome) for a in history] == [("holder", "succeeded")]


async def test_postgres_a_worker_whose_clock_is_a_minute_ahead_takes_no_live_lease(
    tmp_path: Path,
) -> None:
    """Given a healthy worker holding a 30 s lease (renewed every 10 s) on PostgreSQL, when a
    worker on a machine whose clock is 60 s ahead claims, then it takes nothing over: the
    lease is measured on the server's clock, not on the claimer's."""
    db = make_database("postgres", tmp_path)
    try:
        await check_holder_keeps_its_task(
            db.backend(), tmp_path / "gate", MachineClock(Machine(ahead=60))
        )
    finally:
        await discard(db)


async def test_postgres_a_dead_workers_lease_is_still_taken_over_on_the_servers_clock(
    tmp_path: Path,
) -> None:
    """Given a worker that claimed under a 0.5 s lease and vanished, when a worker whose
    clock is an hour *behind* claims, then it takes the task over once the lease has ended
    by the server's clock (by its own clock that would be an hour later). The task has no
    retry budget left, so the claim that finds it ends it (`state.LOST_WHEN_SPENT`)."""
    db = make_database("postgres", tmp_path)
    backend = db.backend()
    try:
        async with TaskQueue(backend) as queue:
            task_id = await queue.enqueue(add, 1, 2)
            [claimed] = await backend.claim("ghost", 1, SystemClock().now, 0.5)
            late = Worker(backend, worker_id="late", clock=MachineClock(Machine(ahead=-3600)))

            async def taken_over() -> bool:
                await late.run_once()
                return await queue.status(task_id) is not TaskStatus.RUNNING

            await wait_until(taken_over, 20, "the dead worker's task to be taken over")
            history = await queue.history(task_id)
            await late.stop()
    finally:
        await discard(db)
    assert claimed.task_id == task_id
    assert [(a.worker_id, a.outcome) for a in history] == [("ghost", "worker_lost")]


async def test_postgres_a_worker_whose_clock_is_8_days_ahead_prunes_no_fresh_result(
    tmp_path: Path,
) -> None:
    """Given a task that succeeded a moment ago, when a worker whose clock is 8 days ahead
    sweeps with the default 7-day retention, then the result stays: its age is measured on
    the server's clock. A sweep on an honest clock with no retention still prunes it."""
    db = make_database("postgres", tmp_path)
    backend = db.backend()
    try:
        async with TaskQueue(backend) as queue:
            task_id = await queue.enqueue(add, 1, 2)
            worker = Worker(backend, worker_id="w")
            assert await worker.run_until_idle() == 1
            ahead = Pruner(backend, MachineClock(Machine(ahead=8 * DAY)), "ahead")
            await ahead.now_and_then(DEFAULT_RETENTION)
            kept = (await queue.counts())[TaskStatus.SUCCEEDED]
            assert (await queue.get_result(task_id)).value == 3  # type: ignore[union-attr]
            await Pruner(backend, SystemClock(), "honest").now_and_then(0.0)
            left = (await queue.counts())[TaskStatus.SUCCEEDED]
            await worker.stop()
    finally:
        await discard(db)
    assert (kept, left) == (1, 0)


async def test_sqlite_a_step_of_the_shared_clock_costs_no_live_lease(tmp_path: Path) -> None:
    """Given a healthy worker holding a 30 s lease on SQLite and another worker on the same
    machine that has looked for work, when the machine's clock steps forward a minute and
    the other worker looks again, then it takes nothing over: it saw the step and discounts
    it for a lease period, by which time the holder has renewed on the new clock."""
    machine = Machine()
    db = str(tmp_path / "queue.db")
    await check_holder_keeps_its_task(
        SQLiteBackend(db), tmp_path / "gate", MachineClock(machine), step=machine
    )


async def test_sqlite_after_a_step_a_dead_workers_task_is_taken_over_a_lease_later(
    tmp_path: Path,
) -> None:
    """Given a task whose worker vanished holding a 1 s lease, and a step of the machine's
    clock forward a minute, when another worker looks, then it does not take the task at
    once (the step alone made the lease look expired) but does within about a lease."""
    machine = Machine()
    backend = SQLiteBackend(tmp_path / "queue.db")
    async with TaskQueue(backend) as queue:
        task_id = await queue.enqueue(add, 1, 2)
        [claimed] = await backend.claim("ghost", 1, MachineClock(machine).now, 1.0)
        worker = Worker(backend, worker_id="w", lease_seconds=1.0, clock=MachineClock(machine))

        async def taken_over() -> bool:
            """The worker looks; the task is no longer the ghost's (with no retry budget
            left, the claim that finds the lost lease ends it: `state.LOST_WHEN_SPENT`)."""
            await worker.run_once()
            return await queue.status(task_id) is not TaskStatus.RUNNING

        assert not await taken_over()  # the ghost's lease runs for a second yet
        machine.ahead = 60.0
        assert not await taken_over()  # expired only by the step: not yet
        began = time.monotonic()

        await wait_until(taken_over, 20, "the dead worker's task to be taken over")
        waited = time.monotonic() - began
        history = await queue.history(task_id)
        await worker.stop()
    assert claimed.task_id == task_id and waited < 15  # about a lease (1 s), not the step (60 s)
    assert [(a.worker_id, a.outcome) for a in history] == [("ghost", "worker_lost")]


async def test_sqlite_a_step_of_8_days_prunes_no_fresh_result(tmp_path: Path) -> None:
    """Given a task that succeeded a moment ago on SQLite, when the machine's clock steps
    forward 8 days and the worker sweeps with the default 7-day retention, then the result
    stays: the worker saw the step and discounts it for a retention period."""
    machine = Machine()
    backend = SQLiteBackend(tmp_path / "queue.db")
    clock = MachineClock(machine)
    async with TaskQueue(backend, clock=clock) as queue:
        task_id = await queue.enqueue(add, 1, 2)
        worker = Worker(backend, worker_id="w", clock=clock)
        assert await worker.run_until_idle() == 1  # its claims looked at the clock
        machine.ahead = 8 * DAY
        await Pruner(backend, clock, "w").now_and_then(DEFAULT_RETENTION)
        result = await queue.get_result(task_id)
        await worker.stop()
    assert result is not None and result.value == 3


def test_a_system_clock_notices_a_step_forward_and_forgets_it_after_the_window() -> None:
    machine = Machine()
    clock = MachineClock(machine)
    assert clock.stepped_forward(10) == 0  # the first look only takes a baseline
    machine.ahead = -30  # a step back discounts nothing
    assert clock.stepped_forward(10) == 0
    machine.ahead = 30
    assert clock.stepped_forward(10) == pytest.approx(60, abs=0.5)
    assert clock.stepped_forward(0) == 0  # outside a window of no time
