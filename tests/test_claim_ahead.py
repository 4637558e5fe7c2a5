"""Claiming ahead: a worker with short tasks keeps the next ones in hand, under lease.

The tasks in hand must never be lost or run twice: they are handed back at stop (their
attempt refunded), a cancel request settles them as cancelled without running them, and a
lost lease drops them. Real SQLite files and real workers; the worker's internal steps
(`pipeline.claim`, `pipeline._land`, `_start_waiting`) are driven directly so that what is
in hand is known, not raced for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sitq import FakeClock, RetryPolicy, SQLiteBackend, TaskQueue, TaskStatus, Worker
from sitq.backends.base import ClaimedTask
from sitq.engine.pipeline import AHEAD_WHEN_UNDER, Slots

pytestmark = pytest.mark.every_backend

RAN: list[int] = []
GATE: dict[str, asyncio.Event] = {}


async def record(i: int) -> int:
    RAN.append(i)
    return i


async def blocker() -> str:
    await GATE["open"].wait()
    return "done"


@pytest.fixture(autouse=True)
def fresh() -> None:
    RAN.clear()
    GATE["open"] = asyncio.Event()


class Ticks:
    """A timer for the slots that the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def claimed(task_id: str) -> ClaimedTask:
    return ClaimedTask(task_id=task_id, name="t", payload=b"", attempt=1, tries=1, token=1,
                       scheduled_for=0.0, enqueued_at=0.0, claimed_at=0.0)  # fmt: skip


async def test_a_worker_claims_ahead_only_while_its_tasks_are_short() -> None:
    ticks = Ticks()
    slots = Slots(4, timer=ticks)
    work = asyncio.create_task(asyncio.sleep(0))  # stands in for each task's turn
    assert slots.ahead_capacity == 0  # nothing has run yet: no reason to hold more
    for i in range(5):
        slots.took(claimed(f"t{i}"), work, now=0.0)
        ticks.now += AHEAD_WHEN_UNDER / 10
        slots.ran(f"t{i}")
        slots.forget(f"t{i}")
    assert slots.ahead_capacity == 4
    for i in range(5, 30):  # tasks turn long: the worker stops holding extra ones
        slots.took(claimed(f"t{i}"), work, now=0.0)
        ticks.now += AHEAD_WHEN_UNDER * 20
        slots.ran(f"t{i}")
        slots.forget(f"t{i}")
    assert slots.ahead_capacity == 0
    await work


@pytest.fixture
async def worker(backend: SQLiteBackend, clock: FakeClock) -> AsyncIterator[Worker]:
    """A worker with one slot, connected but not started: the test drives it."""
    w = Worker(backend, clock=clock, concurrency=1, lease_seconds=30, worker_id="ahead")
    await w._ensure_connected()
    yield w
    GATE["open"].set()
    await w.stop()


async def in_hand(queue: TaskQueue, worker: Worker) -> tuple[str, str]:
    """Enqueue a blocking task and a recorded one; the worker runs the first and holds the
    second in hand (claimed ahead, waiting for its one slot). Both may run again if their
    worker is lost."""
    retried = queue.with_options(retry=RetryPolicy.fixed(0, max_attempts=3))
    first = await retried.enqueue(blocker)
    second = await retried.enqueue(record, 2)
    claimed = await worker.pipeline._request(2).sent_to(worker.backend)
    worker.pipeline._land(claimed)  # into the hand, as a started worker's claims land
    worker._start_waiting()  # then it starts what its slots allow
    await asyncio.sleep(0)  # the first one starts and blocks on the gate
    assert [t.task_id for t in worker._slots.ahead.waiting] == [second]
    assert (await queue.get_task(second)).status is TaskStatus.RUNNING  # leased to us
    return first, second


async def test_stopping_hands_back_the_tasks_in_hand_with_their_attempt_refunded(
    queue: TaskQueue, worker: Worker
) -> None:
    first, second = await in_hand(queue, worker)
    await worker.stop(grace=0)
    for task_id in (first, second):
        info = await queue.get_task(task_id)
        assert info.status is TaskStatus.QUEUED, info
        assert info.attempts == 0, info  # handed back, not used up
    assert RAN == []  # the task in hand never ran
    assert await queue.history(second) == []


async def test_a_cancelled_task_in_hand_is_settled_cancelled_without_running(
    queue: TaskQueue, worker: Worker
) -> None:
    first, second = await in_hand(queue, worker)
    await queue.cancel(second)  # a request: the task is leased to a worker
    await worker._renew_leases()  # the heartbeat finds the request
    result = await queue.get_result(second, timeout=10)
    assert result is not None and result.status is TaskStatus.CANCELLED
    assert RAN == []
    GATE["open"].set()
    done = await queue.get_result(first, timeout=10)
    assert done is not None and done.value == "done"


async def test_a_task_in_hand_whose_lease_was_lost_is_dropped_and_runs_once_elsewhere(
    backend: SQLiteBackend, queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    first, second = await in_hand(queue, worker)
    clock.advance(31)  # our leases expire (the heartbeat was not let run)
    other = Worker(backend, clock=clock, concurrency=5, worker_id="other")
    try:
        taken = await other.pipeline.claim(5)  # takes both over
        assert {t.task_id for t in taken} == {first, second}
        await worker._renew_leases()  # ours were lost: the one in hand leaves, unrun
        assert list(worker._slots.ahead.waiting) == []
        GATE["open"].set()  # our blocker ends; its outcome is refused (the lease moved on)
        await asyncio.gather(*(other._spawn(task, clock.now()) for task in taken))
    finally:
        await other.stop()
    assert RAN == [2]  # once, by the other worker
    result = await queue.get_result(second, timeout=10)
    assert result is not None and result.value == 2


async def test_a_dead_workers_unstarted_tasks_are_taken_over_without_an_attempt(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock
) -> None:
    """The attempt count belongs to the start. A worker claims three tasks, two of them
    ahead; it starts one of those and records that with its next claim (of nothing), then
    dies. The taker finds a lost attempt for the two that started, none for the third."""
    ids = [await queue.enqueue(record, i) for i in range(3)]
    claimed = await backend.claim("dies", 3, clock.now(), 10, ahead=2)
    assert [(c.task_id, c.ahead) for c in claimed] == [(ids[0], False), (ids[1], True),
                                                      (ids[2], True)]  # fmt: skip
    begun = clock.now() + 0.5
    await backend.claim("dies", 0, clock.now(), 10, started=[(ids[1], claimed[1].token, begun)])
    started = [(await queue.get_task(i)).started_at for i in ids]
    assert started[1] == begun and started[2] is None and started[0] is not None
    clock.advance(11)  # its leases expire
    taken = {t.task_id: t for t in await backend.claim("taker", 3, clock.now(), 10)}
    assert [taken[i].lost_attempt is not None for i in ids] == [True, True, False]
    assert [taken[i].attempt for i in ids] == [2, 2, 1]
    assert [(await queue.get_task(i)).attempts for i in ids] == [2, 2, 1]
    lost = [(a.task_id, a.attempt) for a in await queue.history() if a.outcome == "worker_lost"]
    assert sorted(lost) == sorted([(ids[0], 1), (ids[1], 1)])


async def test_an_outcome_records_the_start_of_a_task_claimed_ahead(
    backend: SQLiteBackend, queue: TaskQueue, worker: Worker
) -> None:
    """A short task started from hand usually ends before its start was recorded: its
    settlement records it, so the finished row says when it started."""
    first, second = await queue.enqueue(record, 1), await queue.enqueue(record, 2)
    claimed = await backend.claim(worker.worker_id, 2, worker.clock.now(), 30, ahead=1)
    assert (await queue.get_task(second)).started_at is None
    await asyncio.gather(*(worker._spawn(task, worker.clock.now()) for task in claimed))
    for task_id in (first, second):
        result = await queue.get_result(task_id, timeout=10)
        assert result is not None and result.is_success() and result.started_at is not None
        assert result.attempts == 1


async def test_the_heartbeat_renews_what_the_slots_hold_and_nothing_else(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    first, second = await in_hand(queue, worker)  # one running, one in hand
    assert set(worker._slots.leases) == {first, second}  # the one in-flight set
    clock.advance(20)  # two thirds of the lease gone: too late to start a task in hand
    assert not worker.keeper.safe_to_start(second)
    await worker._renew_leases()  # the heartbeat's trip: both leases hold from now
    assert worker.keeper.safe_to_start(second) and worker.keeper.alive(first)
    running = worker._slots.running[first]
    GATE["open"].set()
    await running  # done with: its slot and its lease go, with no call to the keeper
    assert set(worker._slots.leases) == {second}
    assert not worker.keeper.alive(first)
