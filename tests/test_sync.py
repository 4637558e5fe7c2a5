"""Issue 4, point 6: SyncTaskQueue and its worker, from plain code and from inside a
running event loop (as in a Jupyter cell), and a clean close."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import sitq
from sitq import (
    FakeClock,
    QueueClosedError,
    RetryPolicy,
    SQLiteBackend,
    SyncTaskQueue,
    TaskNotFoundError,
    TaskQueue,
    TaskStatus,
)

# Tasks reach module-level state by reference (see test_worker.py).
SHARED: dict[str, SyncTaskQueue] = {}


@pytest.fixture(autouse=True)
def _clear_shared() -> Iterator[None]:
    yield
    SHARED.clear()


def add(a: int, b: int) -> int:
    return a + b


async def async_add(a: int, b: int) -> int:
    return a + b


def flaky(n: int) -> int:
    if sitq.current_task().attempt == 1:
        raise ConnectionError("first try fails")
    return n


def broken() -> None:
    raise ValueError("always broken")


def enqueue_follow_up(n: int) -> str:
    """A plain task (so in a worker thread) that queues more work through the sync API."""
    return SHARED["queue"].enqueue(add, n, 1)


async def call_sync_from_the_loop() -> None:
    SHARED["queue"].counts()  # would block the loop it needs: refused


def make_queue(path: Path, clock: FakeClock | None = None) -> SyncTaskQueue:
    return SyncTaskQueue(SQLiteBackend(path), clock=clock)


def test_same_public_methods_as_task_queue() -> None:
    def public(cls: type) -> set[str]:
        return {name for name, _ in inspect.getmembers(cls) if not name.startswith("_")}

    assert public(TaskQueue) - {"backend", "serializer", "clock"} <= public(SyncTaskQueue)
    assert not inspect.iscoroutinefunction(SyncTaskQueue.get_result)


def test_in_a_plain_script(db_path: Path) -> None:
    with make_queue(db_path, FakeClock()) as queue:
        worker = queue.worker(worker_id="sync-w")
        first = queue.enqueue(add, 2, 3)
        batch = queue.enqueue_many([sitq.call(async_add, n, n) for n in range(4)])
        retried = queue.with_options(retry=RetryPolicy.fixed(5, max_attempts=2)).enqueue(flaky, 7)
        dead = queue.enqueue(broken)
        assert queue.status(first) is TaskStatus.QUEUED

        assert worker.run_until_idle() == 8  # 7 tasks, one retried; FakeClock skips the wait

        assert queue.get_result(first, timeout=1).value == 5
        assert [r.value for r in queue.gather(batch, timeout=1)] == [0, 2, 4, 6]
        assert queue.get_result(retried).attempts == 2
        assert [r.task_id for r in queue.dead_letters()] == [dead]
        assert queue.get_task(dead).error_type == "ValueError"
        assert queue.counts()[TaskStatus.SUCCEEDED] == 6
        assert queue.summary().dead_letters == 1
        assert [a.outcome for a in queue.history(retried)] == ["retrying", "succeeded"]

        queue.requeue(dead)
        assert queue.status(dead) is TaskStatus.QUEUED
        worker.run_once()
        assert queue.purge_dead_letters() == 1
        later = queue.with_options(delay=60).enqueue(add, 1, 1)
        assert queue.cancel(later) is True
        with pytest.raises(TaskNotFoundError):
            queue.get_task("no-such-task")


def test_a_background_worker(db_path: Path) -> None:
    with make_queue(db_path) as queue:
        worker = queue.worker()
        worker.start()
        ids = queue.enqueue_many([sitq.call(add, n, 10) for n in range(5)])
        results = queue.gather(ids, timeout=10)
        worker.stop()
        assert [r.value for r in results if r] == [10, 11, 12, 13, 14]
        assert worker.processed == 5


def test_worker_as_a_context_manager(db_path: Path) -> None:
    with make_queue(db_path) as queue, queue.worker():
        task_id = queue.enqueue(async_add, 1, 2)
        assert queue.get_result(task_id, timeout=10).value == 3


async def test_inside_a_running_event_loop(db_path: Path) -> None:
    """An async test function runs on a loop, as a Jupyter cell does: blocking calls work
    because they run on the queue's own loop, and nothing patched this one."""
    running = asyncio.get_running_loop()
    with make_queue(db_path) as queue, queue.worker():
        task_id = queue.enqueue(async_add, 20, 22)
        assert queue.get_result(task_id, timeout=10).value == 42
        assert queue.thread is not threading.current_thread()
    assert asyncio.run.__module__ == "asyncio.runners"  # the original, not nest-asyncio's
    assert not hasattr(running, "_nest_patched")
    nested = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="running event loop"):
        asyncio.run(nested)  # still refused here: no nesting patch was applied
    nested.close()


def test_closes_cleanly(db_path: Path) -> None:
    queue = make_queue(db_path).connect()
    worker = queue.worker()
    worker.start()
    thread = queue.thread
    assert thread is not None and thread.is_alive() and thread.daemon

    queue.close()

    assert not thread.is_alive()
    assert queue.thread is None
    assert not worker.worker.backend.is_connected
    queue.close()  # twice is fine


def test_first_use_connects_and_use_after_close_is_a_clear_error(db_path: Path) -> None:
    queue = make_queue(db_path)
    task_id = queue.enqueue(add, 1, 2)  # connects by itself, like TaskQueue
    assert queue.status(task_id) is TaskStatus.QUEUED
    queue.close()
    with pytest.raises(QueueClosedError, match="closed"):
        queue.enqueue(add, 1, 2)
    with pytest.raises(QueueClosedError, match="closed"):
        queue.worker()
    with pytest.raises(QueueClosedError, match="closed"):
        queue.connect()


def test_plain_tasks_may_use_the_sync_queue(db_path: Path) -> None:
    with make_queue(db_path) as queue:
        SHARED["queue"] = queue
        worker = queue.worker()
        first = queue.enqueue(enqueue_follow_up, 41)
        worker.run_once()
        follow_up = queue.get_result(first, timeout=5).value
        worker.run_once()
        assert queue.get_result(follow_up, timeout=5).value == 42


def test_async_tasks_on_its_own_loop_are_refused(db_path: Path) -> None:
    with make_queue(db_path) as queue:
        SHARED["queue"] = queue
        worker = queue.worker()
        task_id = queue.enqueue(call_sync_from_the_loop)
        worker.run_until_idle()
        result = queue.get_result(task_id, timeout=5)
    assert result.error_type == "RuntimeError"
    assert "wait for itself forever" in result.error


def test_many_threads_share_one_queue(db_path: Path) -> None:
    with make_queue(db_path) as queue:
        ids: list[str] = []

        def client(k: int) -> None:
            ids.extend(queue.enqueue(add, k, i) for i in range(10))

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        queue.worker(concurrency=20).run_until_idle()
        assert len(set(ids)) == 40
        assert queue.summary()[TaskStatus.SUCCEEDED] == 40


def test_gather_draws_its_bar_in_the_calling_thread(
    db_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with make_queue(db_path) as queue:
        ids = queue.enqueue_many([sitq.call(add, n, n) for n in range(3)])
        queue.worker().run_until_idle()
        capsys.readouterr()
        assert [r.value for r in queue.gather(ids, progress=True)] == [0, 2, 4]
        assert "tasks: 100%" in capsys.readouterr().err and queue.gather(ids) is not None
        assert capsys.readouterr().err == ""  # no bar by default off a terminal
        with pytest.raises(TaskNotFoundError):
            queue.gather([*ids, "nope"])
