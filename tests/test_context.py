"""What a running task knows about itself: current_task() and report_progress().

Also what a process task cannot know: it runs in another process, with no link back to
its worker, so it has no current task (and must not see a stale one inherited by fork).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

import sitq
from sitq import FakeClock, SQLiteBackend, TaskQueue, TaskStatus, Worker


async def report_then_return(n: int) -> int:
    sitq.report_progress(0.5, "halfway")
    sitq.report_progress(1.0, f"done {n}")
    return n


def report_then_return_in_thread(n: int) -> int:
    sitq.report_progress(1.0, f"done {n} in a thread")
    return n


def attempt_number() -> int:
    return sitq.current_task().attempt


def make_adder(n: int) -> Callable[[int], int]:
    return lambda x: x + n


def make_generator(n: int) -> Iterator[int]:
    return (i for i in range(n))


async def test_last_report_of_an_async_task_is_kept(queue: TaskQueue, worker: Worker) -> None:
    task_id = await queue.enqueue(report_then_return, 3)
    await worker.run_until_idle()

    info = await queue.get_task(task_id)
    assert info.status is TaskStatus.SUCCEEDED
    assert (info.progress, info.progress_message) == (1.0, "done 3")


async def test_last_report_of_a_thread_task_is_kept(queue: TaskQueue, worker: Worker) -> None:
    task_id = await queue.enqueue(report_then_return_in_thread, 4)
    await worker.run_until_idle()

    info = await queue.get_task(task_id)
    assert (info.progress, info.progress_message) == (1.0, "done 4 in a thread")


@pytest.fixture
async def process_queue(tmp_path: Path) -> AsyncIterator[tuple[TaskQueue, Worker]]:
    clock = FakeClock()
    backend = SQLiteBackend(tmp_path / "processes.db")
    async with TaskQueue(backend, clock=clock) as queue:
        worker = Worker(backend, clock=clock, worker_id="w1", processes=1, rng=random.Random(0))
        yield queue, worker
        await worker.stop()


async def test_a_process_task_has_no_current_task(process_queue) -> None:
    """The first task forks the pool inside its own context; the child must not keep it."""
    queue, worker = process_queue
    first = await queue.with_options(executor="process").enqueue(attempt_number)
    await worker.run_until_idle()

    result = await queue.get_result(first, timeout=5)
    assert result.is_failed()
    assert result.error_type == "LookupError"
    assert "process task" in result.error


async def test_process_results_travel_like_thread_results(process_queue) -> None:
    """Values come back with cloudpickle, so a lambda works from a process as from a thread;
    a value nothing can pickle fails with a SerializationError that says where."""
    queue, worker = process_queue
    in_process = queue.with_options(executor="process")
    adder = await in_process.enqueue(make_adder, 2)
    generator = await in_process.enqueue(make_generator, 3)
    await worker.run_until_idle()

    [ok, bad] = await queue.gather([adder, generator], timeout=5)
    assert ok.is_success() and ok.value(40) == 42
    assert bad.is_failed() and bad.error_type == "SerializationError"
    assert "back from the worker process" in bad.error
