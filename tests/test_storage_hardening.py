"""Storage under pressure: cancelled calls, lock waits, first-time creation, exits.

Each test holds SQLite's write lock from a *real other process* (`LockHolder`), the way a
busy worker elsewhere would, and checks a promise of issue 9:

- a storage call cancelled at any point (a timeout, `worker.stop()`, Ctrl-C) leaves no open
  transaction and no held lock, and the next call works;
- waiting for the lock never costs a live worker its lease;
- five processes creating one new database at the same instant all succeed;
- a program exits promptly whether or not it closed anything.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from backends import write_lock_is_free

from sitq import SQLiteBackend, TaskQueue, TaskStatus, Worker

HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
for _ in range(int(sys.argv[3])):
    conn.execute("BEGIN IMMEDIATE")
    print("locked", flush=True)
    if float(sys.argv[2]) > 0:
        time.sleep(float(sys.argv[2]))
    else:
        sys.stdin.readline()  # hold until told
    conn.execute("COMMIT")
    print("released", flush=True)
    time.sleep(0.05)
"""


class LockHolder:
    """Another process holding SQLite's write lock: until `release()`, or for `seconds`
    at a time, `rounds` times."""

    def __init__(self, db: Path, seconds: float = 0, rounds: int = 1) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(db), str(seconds), str(rounds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "locked"

    def release(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "released"

    def finish(self) -> None:
        self.process.wait(timeout=60)


async def add(a: int, b: int) -> int:
    return a + b


async def test_an_enqueue_cancelled_while_waiting_for_the_lock_leaves_nothing_open(
    db_path: Path,
) -> None:
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        await queue.enqueue(add, 0, 0)  # the file exists before the other process locks it
        holder = LockHolder(db_path)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(queue.enqueue(add, 1, 2), 0.5)
        holder.release()
        holder.finish()
        # the next call works (no "cannot start a transaction within a transaction")
        task_id = await queue.enqueue(add, 2, 3)
        assert await queue.status(task_id) is TaskStatus.QUEUED
        assert write_lock_is_free(db_path, wait=1)  # other processes are not locked out
        # nothing half-done: the timed-out enqueue either landed whole or not at all
        counts = await queue.counts()
        assert counts[TaskStatus.QUEUED] in (2, 3)


GATE: dict[str, asyncio.Event] = {}


async def finishes_when_told() -> str:
    GATE["started"].set()
    await GATE["release"].wait()
    return "done"


async def test_stop_during_a_settle_waiting_for_the_lock_keeps_the_outcome(
    db_path: Path,
) -> None:
    GATE["started"], GATE["release"] = asyncio.Event(), asyncio.Event()
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        task_id = await queue.enqueue(finishes_when_told)
        worker = Worker(SQLiteBackend(db_path), shutdown_grace=0.1)
        await worker.start()
        await asyncio.wait_for(GATE["started"].wait(), 10)
        holder = LockHolder(db_path)
        GATE["release"].set()  # the task ends; its settle now waits for the lock
        stopping = asyncio.create_task(worker.stop())
        deadline = time.monotonic() + 10
        while worker.pipeline.batches == 0:  # a condition, polled with a deadline
            assert time.monotonic() < deadline, "the settle never started"
            await asyncio.sleep(0.01)
        assert not stopping.done()
        holder.release()
        holder.finish()
        await asyncio.wait_for(stopping, 30)
        result = await queue.get_result(task_id, timeout=5)
    assert result is not None and result.status is TaskStatus.SUCCEEDED
    assert result.value == "done"
    assert write_lock_is_free(db_path, wait=1)


SYNC_INTERRUPT = """
import os, signal, sys, threading
from sitq import SQLiteBackend, SyncTaskQueue

def add(a, b):
    return a + b

queue = SyncTaskQueue(SQLiteBackend(sys.argv[1]))
queue.enqueue(add, 0, 0)
print("ready", flush=True)
sys.stdin.readline()  # the lock is held now
threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
    queue.enqueue(add, 1, 2)
    print("no interrupt", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
sys.stdin.readline()  # the lock is released now
queue.enqueue(add, 3, 4)
print("counts", queue.counts()["queued"], flush=True)
"""


def test_ctrl_c_in_sync_task_queue_leaves_the_queue_usable(db_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(
        [sys.executable, "-c", SYNC_INTERRUPT, str(db_path)], cwd=root,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    holder = LockHolder(db_path)
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.stdout.readline().strip() == "interrupted"
    holder.release()
    holder.finish()
    child.stdin.write("\n")
    child.stdin.flush()
    last = child.stdout.readline().split()
    assert child.wait(timeout=30) == 0
    assert last[0] == "counts" and int(last[1]) in (2, 3)
    assert write_lock_is_free(db_path, wait=1)


async def sleeps(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


async def test_waiting_for_the_lock_never_costs_a_live_worker_its_lease(db_path: Path) -> None:
    """A 2 s lease while another process holds the lock 1.5 s at a time: the live worker
    keeps all six tasks (a second worker stands ready to take over any lease that lapses)."""
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        ids = [await queue.enqueue(sleeps, 3.0) for _ in range(6)]
        first = Worker(SQLiteBackend(db_path), lease_seconds=2, worker_id="live")
        await first.start()
        deadline = time.monotonic() + 10
        while (await queue.counts())[TaskStatus.RUNNING] < 6:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        holder = LockHolder(db_path, seconds=1.5, rounds=3)
        second = Worker(SQLiteBackend(db_path), lease_seconds=2, worker_id="rival",
                        poll_interval=0.05)  # fmt: skip
        await second.start()
        results = await queue.gather(ids, timeout=60)
        holder.finish()
        await first.stop()
        await second.stop()
        history = await queue.history()
    assert all(r is not None and r.status is TaskStatus.SUCCEEDED for r in results)
    assert [a.outcome for a in history] == ["succeeded"] * 6
    assert {a.worker_id for a in history} == {"live"}


class CountedClaims(SQLiteBackend):
    """The real SQLite backend, counting the claims that came back."""

    claims = 0

    async def claim(self, *args: Any, **kwargs: Any) -> list[Any]:
        claimed = await super().claim(*args, **kwargs)
        self.claims += 1
        return claimed


async def held_until_told() -> str:
    await GATE["release"].wait()
    return "done"


@pytest.mark.parametrize("rival_starts", ["idle before", "started during"])
async def test_an_outage_longer_than_the_lease_costs_no_live_worker_its_tasks(
    db_path: Path, rival_starts: str
) -> None:
    """Given three tasks running under 1.5 s leases, and another process holding the write
    lock for 3 s, so that the owner's heartbeats give up (busy_timeout 0.02 s) while a
    rival worker waits for the lock (idle since before, or starting meanwhile): when the
    rival gets it, then no lease counts as expired (the time nobody could write is made
    up for), and the owner finishes all three."""
    GATE["release"] = asyncio.Event()
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        ids = [await queue.enqueue(held_until_told) for _ in range(3)]
        live = Worker(SQLiteBackend(db_path, busy_timeout=0.02), lease_seconds=1.5,
                      worker_id="live")  # fmt: skip
        await live.start()
        deadline = time.monotonic() + 10
        while (await queue.counts())[TaskStatus.RUNNING] < 3:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        rival_backend = CountedClaims(db_path, poll_interval=0.05)
        rival = Worker(rival_backend, lease_seconds=1.5, worker_id="rival")
        if rival_starts == "idle before":
            await rival.start()
        holder = LockHolder(db_path, seconds=3, rounds=1)
        if rival_starts == "started during":
            await rival.start()
        assert holder.process.stdout is not None
        assert await asyncio.to_thread(holder.process.stdout.readline) == "released\n"
        after_release = rival_backend.claims
        while rival_backend.claims < after_release + 5:  # the rival looked again and again
            assert time.monotonic() < deadline + 30, "the rival stopped claiming"
            await asyncio.sleep(0.01)
        GATE["release"].set()
        results = await queue.gather(ids, timeout=10)
        holder.finish()
        await live.stop()
        await rival.stop()
        history = await queue.history()
    assert [(r.status, r.value) for r in results if r is not None] == [
        (TaskStatus.SUCCEEDED, "done")
    ] * 3
    assert [(a.worker_id, a.outcome) for a in history] == [("live", "succeeded")] * 3


def _open_new(path: str, start: Any, errors: Any) -> None:
    start.wait()
    try:
        asyncio.run(_connect_and_close(path))
    except Exception as exc:  # reported to the parent, which fails the test
        errors.put(f"{type(exc).__name__}: {exc}")


async def _connect_and_close(path: str) -> None:
    backend = SQLiteBackend(path)
    await backend.connect()
    await backend.close()


def test_five_processes_creating_one_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    errors = context.Queue()
    for round_number in range(50):
        path = str(tmp_path / f"new-{round_number}.db")
        start = context.Event()
        children = [context.Process(target=_open_new, args=(path, start, errors))
                    for _ in range(5)]  # fmt: skip
        for child in children:
            child.start()
        start.set()
        for child in children:
            child.join(60)
            assert child.exitcode == 0
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []


NEVER_CLOSED = """
import asyncio, sys, time
from sitq import SQLiteBackend, TaskQueue, Worker

def blocking(seconds):
    time.sleep(seconds)  # a plain function: it runs in a thread

async def main():
    backend = SQLiteBackend(sys.argv[1])
    queue = TaskQueue(backend)                  # the original sitq: no connect()
    worker = Worker(backend, poll_interval=0.1)  # and poll_interval=
    await worker.start()
    task_id = await queue.enqueue(blocking, 60)
    while (await queue.status(task_id)) != "running":
        await asyncio.sleep(0.01)
    print("running; leaving without closing anything", flush=True)

asyncio.run(main())
"""


def test_a_program_that_never_closes_anything_exits_promptly(db_path: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", NEVER_CLOSED, str(db_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "leaving without closing" in done.stdout
    assert time.monotonic() - started < 20  # not the task's 60 s, not forever
