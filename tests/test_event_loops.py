"""One queue or worker across several event loops (issue 21, point 7).

A script or a notebook may call `asyncio.run()` many times with one TaskQueue. A call left
in flight when a loop closes (a timeout) used to kill aiosqlite's thread, and the next
call then waited forever; a PostgreSQL pool refused to work on the next loop. The queue
must follow the new loop or raise a typed error, never block. (SQLite's connection now
lives in a thread of sitq's own, which drops an answer for a closed loop and carries on.)
A worker gets `run()` for scripts, a warning for `asyncio.run(worker.start())`, and a
`stop()` that returns at once when its loop has gone. Hangs are caught by subprocess and
wait_for deadlines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from backends import Database

from sitq import EventLoopError, TaskQueue, Worker
from sitq.backends.sqlite import SQLiteBackend
from sitq.task import TaskStatus

ROOT = Path(__file__).resolve().parent.parent
HANG = 90  # seconds: far above what the scripts need; reached only if something hangs

#: 100 rounds of asyncio.run, each ending with a get_result timed out mid-call, then a
#: task enqueued, run and its result read, all with the same TaskQueue.
ROUNDS = """
import asyncio, sys
from sitq import TaskQueue, Worker

def add(a, b):
    return a + b

queue = TaskQueue(sys.argv[1])

async def timed_out(i):
    task_id = await queue.with_options(delay=3600).enqueue(add, i, i)
    try:
        await asyncio.wait_for(queue.get_result(task_id), 0.002 * (i % 8))
    except TimeoutError:
        pass

async def works():
    task_id = await queue.enqueue(add, 2, 3)
    async with Worker(queue.backend) as worker:
        result = await queue.get_result(task_id, timeout=10)
    print("result", result.value, sum((await queue.counts()).values()))
    await queue.close()

for i in range(100):
    asyncio.run(timed_out(i))
asyncio.run(works())
"""


def run_script(source: str, *args: str, timeout: float = HANG) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", source, *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


def test_a_queue_survives_100_asyncio_runs_that_end_in_a_timeout(database: Database) -> None:
    """Given one TaskQueue and 100 asyncio.run() calls, each ending while get_result is
    mid-call, when a task is enqueued and run afterwards, then its result comes back."""
    done = run_script(ROUNDS, database.url)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "result 5 101" in done.stdout


def test_a_call_answered_after_its_loop_closed_does_not_hang_the_next_one(
    db_path: Path,
) -> None:
    """Given three enqueues when their loop ends, one stuck behind a held write lock (so
    the connection's thread answers a closed loop) and two waiting to go with the next
    group, when the next asyncio.run() enqueues, then it works, and the three are kept."""
    script = """
        import asyncio, sqlite3, sys, time
        from sitq import TaskQueue
        queue = TaskQueue(sys.argv[1])
        asyncio.run(queue.connect())
        holder = sqlite3.connect(sys.argv[1], isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")

        async def stuck():
            enqueues = asyncio.gather(*(queue.enqueue(print, i) for i in range(3)))
            try:
                await asyncio.wait_for(enqueues, 0.1)
            except TimeoutError:
                print("timed out", flush=True)

        asyncio.run(stuck())
        holder.execute("COMMIT")  # the stuck enqueue runs now and answers a closed loop

        async def again():
            await asyncio.wait_for(queue.enqueue(print, 2), 10)
            print("tasks", sum((await queue.counts()).values()))
            await queue.close()

        asyncio.run(again())
    """
    done = run_script(textwrap.dedent(script), str(db_path), timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["timed", "out", "tasks", "4"]


def test_an_in_memory_queue_lives_across_asyncio_runs() -> None:
    """Given an in-memory queue, when one asyncio.run() enqueues, a second runs the task
    and a third reads the result, then the task and its result are there: the database
    lives in the connection's thread, not in an event loop."""
    backend = SQLiteBackend(":memory:")
    queue, worker = TaskQueue(backend), Worker(backend)
    task_id = asyncio.run(queue.enqueue(pow, 2, 5))
    assert asyncio.run(worker.run_until_idle()) == 1

    async def result() -> object:
        found = await queue.get_result(task_id, timeout=0)
        await worker.stop()
        await queue.close()
        return None if found is None else found.value

    assert asyncio.run(result()) == 32


def test_a_program_that_never_closes_its_queue_still_exits(db_path: Path) -> None:
    """Given a script that enqueues and ends without closing its queue, then it exits at
    once (the connection's thread is a daemon) and the task is in the file."""
    script = """
        import asyncio, sys
        from sitq import TaskQueue

        async def main():
            queue = TaskQueue(sys.argv[1])
            await queue.enqueue(print, "kept")
            print("enqueued", flush=True)

        asyncio.run(main())
    """
    done = run_script(textwrap.dedent(script), str(db_path), timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["enqueued"]
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM sitq_tasks").fetchone()[0] == 1
    conn.close()


def test_a_backend_refuses_a_second_loop_while_the_first_still_runs(db_path: Path) -> None:
    """Given a backend connected on an event loop that runs in another thread, when this
    thread's loop uses it, then EventLoopError says to give each loop its own backend; the
    first loop keeps using it."""
    backend = SQLiteBackend(db_path)
    other = asyncio.new_event_loop()
    runner = threading.Thread(target=other.run_forever, daemon=True)
    runner.start()

    def on_other(coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, other).result(timeout=HANG)  # type: ignore[arg-type]

    try:
        on_other(backend.connect())
        with pytest.raises(EventLoopError, match="its own backend"):
            asyncio.run(backend.counts())
        assert on_other(backend.counts())[TaskStatus.QUEUED] == 0  # type: ignore[index]
        on_other(backend.close())
    finally:
        other.call_soon_threadsafe(other.stop)
        runner.join(HANG)
        other.close()


# -- the worker -----------------------------------------------------------------------------


async def test_run_returns_once_stop_is_called(db_path: Path) -> None:
    """Given `worker.run()` running, when another coroutine calls stop(), then run() returns
    (and the task it ran succeeded)."""
    backend = SQLiteBackend(db_path)
    async with TaskQueue(backend) as queue:
        worker = Worker(backend)
        running = asyncio.create_task(worker.run())
        task_id = await queue.enqueue(pow, 2, 10)
        result = await queue.get_result(task_id, timeout=10)
        await asyncio.wait_for(worker.stop(), 10)
        await asyncio.wait_for(running, 10)
    assert result is not None and result.value == 1024


def test_run_stops_gracefully_on_sigterm(db_path: Path) -> None:
    """Given `asyncio.run(worker.run())` in a script with a task running, when SIGTERM
    arrives, then the running task finishes, run() returns and the script exits 0."""
    script = """
        import asyncio, sys
        from sitq import TaskQueue, Worker

        async def slow():
            print("running", flush=True)
            await asyncio.sleep(0.5)
            return "done"

        async def main():
            queue = TaskQueue(sys.argv[1])
            await queue.enqueue(slow)
            await queue.close()
            await Worker(sys.argv[1]).run()
            print("returned", flush=True)

        asyncio.run(main())
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(db_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "running"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "returned" in out
    conn = sqlite3.connect(db_path)
    [(status,)] = conn.execute("SELECT status FROM sitq_tasks").fetchall()
    conn.close()
    assert status == "succeeded"


def test_asyncio_run_of_start_warns_that_the_worker_ends_with_its_loop(db_path: Path) -> None:
    """Given the original tutorial's `asyncio.run(worker.start())`, then a RuntimeWarning
    says the worker ended with its loop and points to `worker.run()`."""
    worker = Worker(SQLiteBackend(db_path))
    with pytest.warns(RuntimeWarning, match=r"worker\.run\(\)"):
        asyncio.run(worker.start())
    asyncio.run(asyncio.wait_for(worker.stop(), 5))


def test_stop_of_a_worker_whose_loop_has_gone_returns_at_once(db_path: Path) -> None:
    """Given a worker started (with a task running) in an asyncio.run() that has ended, when
    stop() is called from a new loop, then it returns at once, and the worker can be
    started again and runs new work."""
    backend = SQLiteBackend(db_path)
    queue = TaskQueue(backend)
    worker = Worker(backend, lease_seconds=60)

    async def started() -> None:
        await queue.enqueue(asyncio.sleep, 30)
        await worker.start()
        deadline = time.monotonic() + 10
        while (await queue.counts())[TaskStatus.RUNNING] == 0:
            assert time.monotonic() < deadline, "the task never started"
            await asyncio.sleep(0.01)

    with pytest.warns(RuntimeWarning):
        asyncio.run(started())
    began = time.monotonic()
    asyncio.run(asyncio.wait_for(worker.stop(), 5))
    assert time.monotonic() - began < 1

    async def again() -> object:
        async with worker:
            task_id = await queue.enqueue(pow, 3, 3)
            result = await queue.get_result(task_id, timeout=10)
        await queue.close()
        return None if result is None else result.value

    assert asyncio.run(asyncio.wait_for(again(), 20)) == 27


def test_a_worker_runs_until_idle_in_several_asyncio_runs_then_stops(db_path: Path) -> None:
    """Given one queue and worker driven by run_until_idle in three asyncio.run() calls,
    then each round's tasks succeed, and stop() from a fourth returns at once."""
    backend = SQLiteBackend(db_path)
    queue, worker = TaskQueue(backend), Worker(backend)

    async def round_of(n: int) -> list[object]:
        ids = [await queue.enqueue(pow, n, k) for k in range(3)]
        await asyncio.wait_for(worker.run_until_idle(), 10)
        return [r.value if r else None for r in await queue.gather(ids, timeout=5)]

    assert [asyncio.run(round_of(n)) for n in (2, 3, 4)] == [[1, 2, 4], [1, 3, 9], [1, 4, 16]]

    async def end() -> None:
        await asyncio.wait_for(worker.stop(), 5)
        await queue.close()

    asyncio.run(end())
