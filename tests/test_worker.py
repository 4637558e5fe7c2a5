"""Workers: atomic claims, deterministic drivers, start/stop."""

from __future__ import annotations

import asyncio
import collections
import logging
from pathlib import Path

import pytest
from trip_counting import counting_trips

import sitq
from sitq import FakeClock, SQLiteBackend, TaskQueue, TaskStatus, Worker, current_task

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL

# Tasks receive pickled copies of what they use; module-level state is sent by reference,
# which is what lets these in-process tests watch their tasks.
RUNS: collections.Counter[int] = collections.Counter()
GATE: dict[str, asyncio.Event | asyncio.Barrier] = {}


async def note(n: int) -> int:
    RUNS[n] += 1
    await asyncio.sleep(0)
    return n


SEEN_WORKERS: set[str] = set()


async def note_once_both_work(n: int) -> int:
    """Hold until tasks of two different workers have started: proof they overlap."""
    SEEN_WORKERS.add(current_task().worker_id)
    if len(SEEN_WORKERS) >= 2:
        GATE["both"].set()
    await asyncio.wait_for(GATE["both"].wait(), timeout=10)
    return await note(n)


async def meet() -> str:
    await asyncio.wait_for(GATE["barrier"].wait(), timeout=5)
    return "met"


async def slow() -> str:
    GATE["started"].set()
    await GATE["release"].wait()
    return "finished"


async def test_two_workers_on_one_file_never_run_the_same_task(db_path: Path) -> None:
    """Given 300 tasks in one file, when two workers with their own connections drain it
    concurrently, then every task ran exactly once and both workers took part."""
    RUNS.clear()
    SEEN_WORKERS.clear()
    GATE["both"] = asyncio.Event()
    ran_by: dict[str, int] = collections.Counter()

    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        ids = await queue.enqueue_many([(note_once_both_work, (n,)) for n in range(300)])
        workers = [
            Worker(SQLiteBackend(db_path), concurrency=5, worker_id=f"w{i}") for i in range(2)
        ]
        await asyncio.gather(*(w.run_until_idle() for w in workers))
        for w in workers:
            await w.stop()
        results = await queue.gather(ids, timeout=5)
        for attempt in await queue.history():
            ran_by[attempt.worker_id] += 1

    assert collections.Counter(range(300)) == RUNS
    assert [r.value for r in results if r] == list(range(300))
    assert sum(ran_by.values()) == 300 and set(ran_by) == {"w0", "w1"}


async def test_run_once_runs_only_what_is_due(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    async def noop() -> None:
        return None

    await queue.with_options(delay=5).enqueue(noop)
    assert await worker.run_once() == 0
    clock.advance(5)
    assert await worker.run_once() == 1
    assert await worker.run_once() == 0


async def test_run_once_respects_concurrency(queue: TaskQueue, backend, clock) -> None:
    async def noop() -> None:
        return None

    await queue.enqueue_many([(noop, ())] * 7)
    worker = Worker(backend, clock=clock, concurrency=3)
    assert [await worker.run_once() for _ in range(4)] == [3, 3, 1, 0]
    await worker.stop()


async def test_async_tasks_run_concurrently_on_the_loop(queue: TaskQueue, worker: Worker):
    """Three tasks that each wait for the others can only finish if they run together."""
    GATE["barrier"] = asyncio.Barrier(3)
    ids = [await queue.enqueue(meet) for _ in range(3)]
    await worker.run_once()
    assert [r.value for r in await queue.gather(ids)] == ["met"] * 3


async def test_stop_lets_in_flight_tasks_finish(db_path: Path) -> None:
    started = GATE["started"] = asyncio.Event()
    release = GATE["release"] = asyncio.Event()

    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend) as queue:
        worker = Worker(backend)
        await worker.start()
        task_id = await queue.enqueue(slow)
        await started.wait()
        stopping = asyncio.create_task(worker.stop())
        await asyncio.sleep(0)
        assert not stopping.done()
        release.set()
        await stopping
        assert await queue.status(task_id) is TaskStatus.SUCCEEDED


async def test_worker_shares_the_backend_connection(db_path: Path) -> None:
    """The tutorial's order: queue.connect, worker.start, worker.stop, queue.close."""
    backend = SQLiteBackend(db_path)
    queue = TaskQueue(backend)
    await queue.connect()
    worker = Worker(backend)
    await worker.start()
    await worker.stop()
    assert backend.is_connected  # the queue still uses it
    await queue.close()
    assert not backend.is_connected


def test_concurrency_alias_and_validation() -> None:
    backend = SQLiteBackend(":memory:")
    assert Worker(backend, max_concurrency=4).concurrency == 4
    assert Worker(backend, concurrency=2).concurrency == 2

    with pytest.raises(ValueError):
        Worker(backend, concurrency=2, max_concurrency=3)
    with pytest.raises(ValueError):
        Worker(backend, concurrency=0)


async def test_worker_loop_survives_a_locked_database(db_path: Path, caplog) -> None:
    """Given a database another program holds locked, when the worker's claim fails, then
    the worker logs it, keeps trying, and runs the task once the lock is released."""
    import logging
    import sqlite3

    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        task_id = await queue.enqueue(note, 7)
        backend = SQLiteBackend(db_path, busy_timeout=0.02, poll_interval=0.02)
        await backend.connect()  # opened before the lock, as a running worker's would be
        locker = sqlite3.connect(db_path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        worker = Worker(backend)
        with caplog.at_level(logging.ERROR, logger="sitq.worker"):
            await worker.start()
            deadline = asyncio.get_running_loop().time() + 10
            while not any("main loop" in r.getMessage() for r in caplog.records):
                assert asyncio.get_running_loop().time() < deadline, "no claim error seen"
                await asyncio.sleep(0.01)  # polling for a condition, with a deadline
            locker.execute("ROLLBACK")
            locker.close()
            result = await queue.get_result(task_id, timeout=10)
            await worker.stop()
        await backend.close()
    assert result is not None and result.value == 7


async def test_one_info_line_when_a_task_starts_and_one_when_it_ends(
    queue: TaskQueue, worker: Worker, clock, caplog: pytest.LogCaptureFixture
) -> None:
    """What an operator greps for: the task's name, id, attempt, outcome and duration."""
    caplog.set_level(logging.INFO, logger="sitq.worker")
    task_id = await queue.enqueue(note, 3)
    await worker.run_until_idle()
    lines = [r for r in caplog.records if getattr(r, "task_id", None) == task_id]
    assert [r.levelno for r in lines] == [logging.INFO, logging.INFO]
    started, ended = (r.getMessage() for r in lines)
    assert started == f"task {task_id} (note) started, attempt 1"
    assert ended.startswith(f"task {task_id} (note) succeeded on attempt 1 in ")
    assert ended.endswith("s") and float(ended.rsplit(" ", 1)[1][:-1]) >= 0
    assert all(r.task_name == "note" and r.attempt == 1 for r in lines)


RUNNING_NOW = {"now": 0, "most": 0}


async def counts_overlap() -> None:
    RUNNING_NOW["now"] += 1
    RUNNING_NOW["most"] = max(RUNNING_NOW["most"], RUNNING_NOW["now"])
    await asyncio.sleep(0.001)  # a real await: other tasks may start meanwhile
    RUNNING_NOW["now"] -= 1


async def test_a_started_worker_never_runs_more_than_its_concurrency(
    queue: TaskQueue, backend
) -> None:
    """Claims sent along with settles (the busy path) still respect `concurrency`."""
    RUNNING_NOW.update(now=0, most=0)
    ids = await queue.enqueue_many([sitq.call(counts_overlap) for _ in range(60)])
    worker = Worker(backend, concurrency=3)
    await worker.start()
    results = await queue.gather(ids, timeout=30)
    await worker.stop()
    assert all(r is not None and r.is_success() for r in results)
    assert RUNNING_NOW["most"] == 3


async def test_an_idle_worker_does_not_spin(db_path: Path) -> None:
    """Given a started worker on an empty queue, when it idles for half a second of real
    time, then it claims a handful of times at most (its waits back off to a cap), never in
    a loop: its own claim landing once woke it at once, so an idle worker claimed
    thousands of times a second and burned a core."""
    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend):
        worker = Worker(backend, poll_interval=0.5)
        await worker.start()
        with counting_trips(backend) as trips:
            await asyncio.sleep(0.5)  # the idling being measured, not a wait for work
        await worker.stop()
    print("trips while idle for 0.5 s:", trips)
    assert trips.count < 20, trips
