"""Group commit on SQLite: writes queued while a trip is out travel together in the next.

Real files, the backend's real connection thread (`sitq.backends.sqlite.thread`), which
counts its passes (trips). Each write must keep its own outcome, nothing queued may be
lost at close, and a group is one transaction (all of it or, after a failure, one by one).
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from trip_counting import Trips, counting_trips

from sitq import FakeClock, SQLiteBackend, TaskQueue, TaskStatus, Worker
from sitq.backends.base import NewTask
from sitq.backends.sqlite.thread import CHECKPOINT_EVERY, ConnectionThread
from sitq.errors import StorageBusyError

pytestmark = pytest.mark.sqlite_only


async def quick(i: int) -> int:
    return i


def row_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM sitq_tasks").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def trips(backend: SQLiteBackend) -> Iterator[Trips]:
    """Count the passes of the connection's thread (the connection is real)."""
    with counting_trips(backend) as counted:
        yield counted


async def test_concurrent_enqueues_share_trips_and_each_gets_its_own_id(
    backend: SQLiteBackend, queue: TaskQueue, trips: Trips, db_path: Path
) -> None:
    ids = await asyncio.gather(*(queue.enqueue(quick, i) for i in range(50)))
    assert len(set(ids)) == 50
    assert trips.count <= 2, trips  # one group (two if the first left alone)
    assert row_count(db_path) == 50
    results = await backend.get_tasks(ids)
    assert [r.status for r in results.values()] == [TaskStatus.QUEUED] * 50


async def test_one_failing_write_in_a_group_fails_alone(
    backend: SQLiteBackend, queue: TaskQueue, db_path: Path
) -> None:
    taken = await queue.enqueue(quick, 0)
    info = await queue.get_task(taken)
    duplicate = NewTask(taken, "quick", b"x", TaskStatus.QUEUED, info.due_at, info.due_at)
    outcomes = await asyncio.gather(
        queue.enqueue(quick, 1),
        backend.add_tasks([duplicate]),  # the same id again: a UNIQUE constraint fails
        queue.enqueue(quick, 2),
        return_exceptions=True,
    )
    assert isinstance(outcomes[1], sqlite3.IntegrityError), outcomes
    assert isinstance(outcomes[0], str) and isinstance(outcomes[2], str)
    assert row_count(db_path) == 3  # the two good writes landed, the bad one alone failed
    assert (await queue.get_task(taken)).name == info.name  # the original row is untouched


async def test_closing_keeps_every_write_already_queued(db_path: Path) -> None:
    queue = TaskQueue(SQLiteBackend(db_path))
    await queue.connect()
    pending = [asyncio.ensure_future(queue.enqueue(quick, i)) for i in range(20)]
    await asyncio.sleep(0)  # they are queued, none has come back yet
    await queue.close()
    assert all(p.done() for p in pending)
    assert row_count(db_path) == 20


async def test_a_cancelled_caller_does_not_cancel_its_write(
    queue: TaskQueue, db_path: Path
) -> None:
    writes = [asyncio.ensure_future(queue.enqueue(quick, i)) for i in range(5)]
    await asyncio.sleep(0)
    writes[2].cancel()
    await asyncio.gather(*writes, return_exceptions=True)
    await queue.counts()  # a read after the group came back
    assert writes[2].cancelled()
    assert row_count(db_path) == 5  # the write itself was kept: never lost half-way


async def test_a_worker_settle_travels_with_the_next_enqueue(
    backend: SQLiteBackend, queue: TaskQueue, trips: Trips
) -> None:
    """End to end with the worker in this process: about one trip per task, not two."""
    async with Worker(backend, concurrency=10):
        first = await queue.enqueue(quick, -1)
        assert await queue.get_result(first, timeout=30) is not None
        trips.clear()
        ids = [await queue.enqueue(quick, i) for i in range(200)]
        results = await queue.gather(ids, timeout=30)
    assert [r.value for r in results if r is not None] == list(range(200))
    assert trips.writes < 1.5 * 200, trips  # one trip per task alone would be 400 (enqueue+settle)


class Gate:
    """A write that holds the connection's thread until the test opens the gate, so that
    what the test sends meanwhile is queued behind it."""

    def __init__(self) -> None:
        self.entered, self.opened = threading.Event(), threading.Event()

    def __call__(self, conn: sqlite3.Connection) -> str:
        self.entered.set()
        assert self.opened.wait(30), "the test never opened the gate"
        return "through"

    async def hold(self, thread: ConnectionThread) -> asyncio.Future[str]:
        passed = thread.write(self)
        assert await asyncio.to_thread(self.entered.wait, 30)
        return passed


def connection_thread(backend: SQLiteBackend) -> ConnectionThread:
    assert backend._thread is not None, "connect the backend first"
    return backend._thread


async def test_a_group_that_cannot_begin_reaches_every_write_of_it(db_path: Path) -> None:
    """Given another connection holding the write lock and no busy timeout, when three
    enqueues travel as one group, then each of them gets the named lock error."""
    backend = SQLiteBackend(db_path, busy_timeout=0)
    async with TaskQueue(backend) as queue:
        gate = Gate()
        passed = await gate.hold(connection_thread(backend))
        writes = [asyncio.ensure_future(queue.enqueue(quick, i)) for i in range(3)]
        await asyncio.sleep(0)  # one turn: the three are queued behind the gate
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            gate.opened.set()
            assert await passed == "through"
            outcomes = await asyncio.gather(*writes, return_exceptions=True)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert [type(o) for o in outcomes] == [StorageBusyError] * 3, outcomes
    assert row_count(db_path) == 0


async def test_queue_and_worker_stay_correct_under_a_fake_clock(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock
) -> None:
    """The deterministic drivers see grouped writes exactly like single ones."""
    ids = await asyncio.gather(*(queue.enqueue(quick, i) for i in range(25)))
    worker = Worker(backend, clock=clock, concurrency=10)
    try:
        assert await worker.run_until_idle() == 25
    finally:
        await worker.stop()
    results = await queue.gather(list(ids), timeout=5)
    assert sorted(r.value for r in results if r is not None) == list(range(25))


async def test_a_lone_write_goes_at_once_and_what_comes_meanwhile_goes_together(
    backend: SQLiteBackend, queue: TaskQueue, trips: Trips, db_path: Path
) -> None:
    """Given a write out in the connection's thread (held there by a gate), when five
    enqueues come meanwhile, then they wait for it and then go together, in one trip."""
    gate = Gate()
    passed = await gate.hold(connection_thread(backend))
    assert (trips.count, trips.writes) == (1, 1)  # the lone write left at once
    others = [asyncio.ensure_future(queue.enqueue(quick, i)) for i in range(5)]
    await asyncio.sleep(0)  # one turn: the five are queued behind the gate
    assert not any(other.done() for other in others)
    gate.opened.set()
    assert await passed == "through"
    assert len(set(await asyncio.gather(*others))) == 5
    assert (trips.count, trips.writes) == (2, 2), trips  # the five went together
    assert row_count(db_path) == 5


async def test_a_lone_enqueue_on_an_idle_connection_is_written_on_the_event_loop(
    backend: SQLiteBackend, queue: TaskQueue, trips: Trips, db_path: Path
) -> None:
    """Given an idle connection (synchronous=NORMAL), when one enqueue comes, then it is
    written here, with no trip to the thread; a burst of them at once still leaves as a
    group: the first here, the others together behind the trip the second starts."""
    await queue.enqueue(quick, 0)
    assert (trips.here, trips.count) == (1, 1), trips
    trips.clear()
    ids = await asyncio.gather(*(queue.enqueue(quick, i) for i in range(30)))
    assert len(set(ids)) == 30
    assert trips.here == 1 and trips.count <= 3, trips
    assert row_count(db_path) == 31


async def test_an_enqueue_finding_the_write_lock_taken_waits_in_the_thread(
    db_path: Path,
) -> None:
    """Given another connection holding the write lock, when an enqueue comes, then the
    event loop is not held: the write goes to the thread, which waits for the lock as any
    write does, and lands once the lock is free."""
    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend) as queue:
        thread = connection_thread(backend)
        holder = sqlite3.connect(db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            write = asyncio.ensure_future(queue.enqueue(quick, 1))
            await asyncio.sleep(0)  # one turn: the enqueue tried here, and was refused
            assert not write.done() and thread.writes_here == 0
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert (await queue.get_task(await write)).status == TaskStatus.QUEUED
        assert thread.writes_here == 0
        await queue.enqueue(quick, 2)  # the lock free again: written here
        assert thread.writes_here == 1
    assert row_count(db_path) == 2


async def test_at_full_durability_every_write_goes_to_the_thread(db_path: Path) -> None:
    """synchronous=FULL: a commit waits for the disk, which the event loop must not."""
    backend = SQLiteBackend(db_path, synchronous="FULL")
    async with TaskQueue(backend) as queue:
        for i in range(3):
            await queue.enqueue(quick, i)
        assert connection_thread(backend).writes_here == 0
    assert row_count(db_path) == 3


async def test_writes_on_the_event_loop_leave_checkpoints_to_a_thread_of_their_own(
    db_path: Path,
) -> None:
    """SQLite's own checkpoint (it syncs the disk) is off while writes run on the event
    loop; a checkpointer runs one every CHECKPOINT_EVERY of them, on its own connection.
    Once it has, the next write starts the WAL over: the WAL holds that write alone."""
    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend) as queue:
        thread = connection_thread(backend)
        for i in range(CHECKPOINT_EVERY + 1):  # the first may follow the set-up's writes
            await queue.enqueue(quick, i)
        assert thread.writes_here >= CHECKPOINT_EVERY and thread.checkpointer is not None
        assert await asyncio.to_thread(thread.checkpointer.finished.wait, 30)
        await queue.enqueue(quick, -1)
        conn = sqlite3.connect(db_path)
        try:
            _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()
        assert 0 < frames < CHECKPOINT_EVERY, frames  # a few pages: one task's row, indexes
    assert row_count(db_path) == CHECKPOINT_EVERY + 2
    assert not db_path.with_name(db_path.name + "-wal").exists()  # folded away at close


def test_a_failed_write_nobody_reads_any_more_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A write's error goes to its caller's future with `set_failed`. If the caller was
    cancelled in the moment between, nobody reads it: asyncio must not log "exception was
    never retrieved" for it (it does for a plain set_exception: the control)."""
    import gc

    from sitq.backends.base import set_failed

    loop = asyncio.new_event_loop()
    try:
        for fail, logged in ((set_failed, False), (asyncio.Future.set_exception, True)):
            caplog.clear()
            future: asyncio.Future[None] = loop.create_future()
            fail(future, sqlite3.IntegrityError("UNIQUE constraint failed: sitq_tasks.id"))
            del future
            gc.collect()
            assert ("never retrieved" in caplog.text) is logged, caplog.text
        awaited: asyncio.Future[None] = loop.create_future()
        set_failed(awaited, ValueError("the caller still gets it"))
        with pytest.raises(ValueError, match="still gets it"):
            loop.run_until_complete(awaited)
    finally:
        loop.close()
