"""The tutorial's API: enqueue, results, options kept apart from task arguments."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import pytest

from sitq import (
    FakeClock,
    InvalidOptionError,
    InvalidTaskError,
    QueueClosedError,
    Result,
    SQLiteBackend,
    TaskNotFoundError,
    TaskQueue,
    TaskStatus,
    Worker,
    call,
    task,
)

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL


async def add(a: int, b: int) -> int:
    return a + b


def multiply(a: int, b: int) -> int:
    return a * b


async def echo_options(timeout=None, retry=None, delay=None, eta=None, priority=None, name=None):
    return {
        "timeout": timeout,
        "retry": retry,
        "delay": delay,
        "eta": eta,
        "priority": priority,
        "name": name,
    }


async def boom(task_id: int) -> None:
    raise ValueError(f"Intentional failure for task {task_id}")


# Tasks get *copies* of what they touch (the call is pickled), so tests that watch tasks
# run use module-level functions and state: cloudpickle sends those by reference.
RAN: list[object] = []


async def record(label: object) -> None:
    RAN.append(label)


@pytest.fixture(autouse=True)
def _clear_ran() -> None:
    RAN.clear()


async def test_async_task_result(queue: TaskQueue, worker: Worker) -> None:
    task_id = await queue.enqueue(add, 2, 3)
    assert await worker.run_until_idle() == 1
    result = await queue.get_result(task_id, timeout=1)
    assert isinstance(result, Result)
    assert result.is_success() and not result.is_failed() and not result.is_pending()
    assert result.value == 5
    assert result.status is TaskStatus.SUCCEEDED
    assert result.attempts == 1
    assert result.task_name == "add"
    assert result.enqueued_at is not None and result.finished_at is not None
    assert result.duration == 0.0  # virtual clock: no time passed


async def test_plain_function_runs_in_a_thread(queue: TaskQueue, worker: Worker) -> None:
    def which_thread() -> str:
        return threading.current_thread().name

    task_id = await queue.enqueue(which_thread)
    await worker.run_until_idle()
    result = await queue.get_result(task_id)
    assert result is not None and result.value.startswith("sitq-task")
    assert result.value != threading.current_thread().name


async def test_lambdas_and_closures(queue: TaskQueue, worker: Worker) -> None:
    factor = 7
    ids = [await queue.enqueue(lambda x: x + 1, 1), await queue.enqueue(lambda: factor * 6)]
    await worker.run_until_idle()
    results = [await queue.get_result(i) for i in ids]
    assert [r.value for r in results if r] == [2, 42]


async def test_kwargs_named_like_options_reach_the_task(queue: TaskQueue, worker: Worker):
    kwargs = {
        "timeout": 3,
        "retry": "yes",
        "delay": 9,
        "eta": "soon",
        "priority": 1,
        "name": "mine",
    }
    task_id = await queue.enqueue(echo_options, **kwargs)
    await worker.run_until_idle()
    result = await queue.get_result(task_id)
    assert result is not None and result.value == kwargs
    # The task was not delayed or renamed by its own arguments.
    assert result.task_name == "echo_options"


async def test_a_raising_task_fails_with_its_error(queue: TaskQueue, worker: Worker) -> None:
    task_id = await queue.enqueue(boom, 1)
    await worker.run_until_idle()
    result = await queue.get_result(task_id, timeout=1)
    assert result is not None and result.is_failed()
    assert result.error == "Intentional failure for task 1"
    assert result.error_type == "ValueError"
    assert "raise ValueError" in (result.traceback or "")
    assert result.attempts == 1


async def test_get_result_returns_none_on_timeout_and_unknown_id(queue: TaskQueue) -> None:
    task_id = await queue.enqueue(add, 1, 1)  # no worker runs it
    assert await queue.get_result(task_id, timeout=0.05) is None
    assert await queue.get_result("no-such-task", timeout=5) is None
    assert await queue.get_result("resilient_task_2", timeout=1) is None


async def test_status_of_unknown_id_is_a_typed_error(queue: TaskQueue) -> None:
    with pytest.raises(TaskNotFoundError, match="no task with id 'nope'"):
        await queue.status("nope")


async def test_delay_and_eta_order_execution(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    start = clock.now()
    await queue.with_options(delay=30).enqueue(record, "thirty")
    await queue.with_options(eta=dt.datetime.fromtimestamp(start + 10, dt.UTC)).enqueue(
        record, "ten"
    )
    await queue.with_options(delay=20).enqueue(record, "twenty")
    await queue.enqueue(record, "now")
    assert (await queue.counts())[TaskStatus.SCHEDULED] == 3

    assert await worker.run_once() == 1  # only the undelayed task is due
    assert RAN == ["now"]
    await worker.run_until_idle()
    assert RAN == ["now", "ten", "twenty", "thirty"]
    assert clock.now() == start + 30  # virtual time jumped to each due time, no further


async def test_priority_runs_first_among_due_tasks(backend: SQLiteBackend, clock: FakeClock):
    async with TaskQueue(backend, clock=clock) as queue:
        for n in range(3):
            await queue.with_options(priority=n).enqueue(record, n)
        worker = Worker(backend, clock=clock, concurrency=1)
        await worker.run_until_idle()
        await worker.stop()
    assert RAN == [2, 1, 0]


async def test_options_are_validated(queue: TaskQueue) -> None:
    for bad in (
        {"delay": -1},
        {"delay": float("nan")},
        {"timeout": 0},
        {"eta": dt.datetime(2030, 1, 1)},
        {"delay": 1, "eta": 5.0},
        {"executor": "gpu"},
        {"retry": 3},
    ):
        with pytest.raises(InvalidOptionError):
            queue.with_options(**bad)


async def test_decorator_options_and_per_call_override(queue: TaskQueue, clock: FakeClock):
    @task(name="named", priority=5)
    async def decorated() -> str:
        return "ok"

    first = await queue.enqueue(decorated)
    second = await queue.with_options(name="renamed").enqueue(decorated)
    assert (await queue.get_task(first)).name == "named"
    assert (await queue.get_task(first)).priority == 5
    assert (await queue.get_task(second)).name == "renamed"
    assert await decorated() == "ok"  # still an ordinary function


async def test_bad_tasks_are_refused_at_enqueue(queue: TaskQueue) -> None:
    with pytest.raises(InvalidTaskError, match="needs a callable"):
        await queue.enqueue(42)
    with pytest.raises(InvalidTaskError, match="coroutine object"):
        await queue.enqueue(add(1, 2))
    assert sum((await queue.counts()).values()) == 0


async def test_a_queue_connects_on_first_use_and_a_closed_one_is_a_typed_error(
    backend: SQLiteBackend,
) -> None:
    """The original sitq's programs use TaskQueue(backend) without connect(): that works."""
    queue = TaskQueue(backend)
    task_id = await queue.enqueue(add, 1, 2)  # never connected: connects by itself
    assert await queue.status(task_id) is TaskStatus.QUEUED
    await queue.close()
    with pytest.raises(QueueClosedError, match="cannot be reused"):
        await queue.get_result("x")


async def test_enqueue_many_is_one_batch_in_order(queue: TaskQueue, worker: Worker) -> None:
    ids = await queue.enqueue_many(
        [call(add, 1, 2), (multiply, (3, 4)), (add, (), {"a": 1, "b": 1})]
    )
    assert len(set(ids)) == 3
    await worker.run_until_idle()
    results = await queue.gather(ids, timeout=1)
    assert [r.value for r in results if r] == [3, 12, 2]


async def test_memory_backend_shared_by_queue_and_worker() -> None:
    backend = SQLiteBackend(":memory:")
    async with TaskQueue(backend) as queue:
        worker = Worker(backend)
        await worker.start()
        task_id = await queue.enqueue(multiply, 6, 7)
        result = await queue.get_result(task_id, timeout=10)
        await worker.stop()
    assert result is not None and result.value == 42
    assert not backend.is_connected


async def test_started_worker_wakes_at_once_on_enqueue(db_path) -> None:
    # A poll interval of one hour: only the in-process wake-up can get this done in time.
    backend = SQLiteBackend(db_path, poll_interval=3600)
    queue = TaskQueue(backend)
    await queue.connect()
    worker = Worker(backend)
    await worker.start()
    await asyncio.sleep(0)  # let the worker reach its idle wait
    task_id = await queue.enqueue(add, 20, 22)
    result = await queue.get_result(task_id, timeout=10)
    await worker.stop()
    await queue.close()
    assert result is not None and result.value == 42


async def test_started_worker_wakes_at_the_next_eta(db_path) -> None:
    backend = SQLiteBackend(db_path, poll_interval=3600)
    async with TaskQueue(backend) as queue, Worker(backend):
        task_id = await queue.with_options(delay=0.2).enqueue(add, 1, 1)
        result = await queue.get_result(task_id, timeout=10)
        assert result is not None and result.value == 2
        assert result.started_at >= result.enqueued_at + dt.timedelta(seconds=0.2)
