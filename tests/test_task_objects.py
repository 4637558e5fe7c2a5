"""Issue 21, point 6: a task's own objects can fail that task, never end its worker.

A result whose pickling raises SystemExit, an exception whose __str__ raises SystemExit,
a GeneratorExit from a thread, a task raising SystemExit or KeyboardInterrupt, a retry
predicate or a hook raising SystemExit: each fails its task (or is ignored, for a hook)
with an error that says what failed, the task's neighbours succeed, and the worker goes
on. Only `os._exit` may take a worker down (see tests/test_process_signals.py).

The worker runs in the background here, as in production, so an exception that escaped
would not come back through a `gather` but surface as "Task exception was never
retrieved" when the asyncio task is collected: the `loop_errors` fixture catches that
(pytest's warning filter does not, as asyncio reports it through a log record).
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pool_tasks
import pytest
from worker_processes import WorkerProcess

from sitq import RetryPolicy, SQLiteBackend, TaskQueue, TaskStatus, Worker, WorkerHooks
from sitq.backends import Backend
from sitq.engine.hooks import TaskEvent

NEVER_RETRIEVED = "exception was never retrieved"


@pytest.fixture
async def loop_errors(caplog: pytest.LogCaptureFixture) -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the event loop's exception handler during the test (and, after it, a
    garbage collection that makes asyncio report any task whose exception was lost)."""
    loop = asyncio.get_running_loop()
    seen: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: seen.append(context))
    yield seen
    gc.collect()
    loop.set_exception_handler(previous)
    assert not seen, seen
    assert NEVER_RETRIEVED not in caplog.text


async def run_between_neighbours(
    backend: Backend, func: Callable[[], Any], executor: str | None, **worker_options: Any
) -> list[Any]:
    """Run `func` between four quick neighbours on a background worker; the five results."""
    async with TaskQueue(backend) as queue:
        hostile = queue.with_options(executor=executor) if executor else queue
        ids = [await queue.enqueue(pool_tasks.echo, n) for n in (1, 2)]
        ids.append(await hostile.enqueue(func))
        ids += [await queue.enqueue(pool_tasks.echo, n) for n in (3, 4)]
        worker = Worker(backend, processes=1, **worker_options)
        await worker.start()
        try:
            results = await queue.gather(ids, timeout=30)
        finally:
            await worker.stop()
    assert all(result is not None for result in results), results
    neighbours = [results[i] for i in (0, 1, 3, 4)]
    assert [(r.status, r.value) for r in neighbours] == [
        (TaskStatus.SUCCEEDED, n) for n in (1, 2, 3, 4)
    ]
    return results


UNSERIALIZABLE = "could not be serialized: pickling raised SystemExit: exit from __reduce__"
UNREADABLE = "<StrExits whose __str__ raised SystemExit>"
CASES = [
    (pool_tasks.returns_unpicklable, None, "SerializationError", UNSERIALIZABLE),
    (pool_tasks.returns_unpicklable_async, None, "SerializationError", UNSERIALIZABLE),
    (pool_tasks.returns_unpicklable, "process", "SerializationError", "pickling raised SystemExit"),
    (pool_tasks.raises_str_exits, None, "StrExits", UNREADABLE),
    (pool_tasks.raises_str_exits_async, None, "StrExits", UNREADABLE),
    (pool_tasks.raises_str_exits, "process", "StrExits", UNREADABLE),
    (pool_tasks.raises_generator_exit, None, "GeneratorExit", "raised by the task"),
    (pool_tasks.raises_generator_exit, "process", "GeneratorExit", "raised by the task"),
    (pool_tasks.raises_system_exit, None, "SystemExit", "3"),
    (pool_tasks.raises_system_exit_async, None, "SystemExit", "3"),
    (pool_tasks.raises_keyboard_interrupt, None, "KeyboardInterrupt", "raised by the task"),
    (pool_tasks.raises_keyboard_interrupt_async, None, "KeyboardInterrupt", "raised by the task"),
    (pool_tasks.raises_keyboard_interrupt, "process", "KeyboardInterrupt", "raised by the task"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("func", "executor", "error_type", "says"),
    CASES,
    ids=[f"{func.__name__}-{executor or 'default'}" for func, executor, _, _ in CASES],
)
async def test_a_hostile_object_fails_its_task_and_only_that_task(
    backend: Backend,
    loop_errors: list[dict[str, Any]],
    func: Callable[[], Any],
    executor: str | None,
    error_type: str,
    says: str,
) -> None:
    hostile = (await run_between_neighbours(backend, func, executor))[2]

    assert hostile.status is TaskStatus.FAILED
    assert hostile.error_type == error_type
    assert says in hostile.error
    where = "__reduce__" if "unpicklable" in func.__name__ else func.__name__
    assert hostile.traceback and f", in {where}\n" in hostile.traceback  # the frame it came from


def exits_while_judging(error: BaseException) -> bool:
    raise SystemExit("exit from a retry predicate")


@pytest.mark.timeout(60)
async def test_a_retry_predicate_that_exits_fails_the_task_for_good(
    backend: Backend, loop_errors: list[dict[str, Any]]
) -> None:
    retry = RetryPolicy.fixed(0, max_attempts=3, retry_on=exits_while_judging)
    hostile = (
        await run_between_neighbours(backend, pool_tasks.raises_str_exits, None, retry=retry)
    )[2]

    assert (hostile.status, hostile.attempts, hostile.error_type) == (
        TaskStatus.FAILED,
        1,
        "StrExits",
    )


class PrintingHooks(WorkerHooks):
    """A hook that reads the error's text, as a logging or alerting hook would."""

    def on_failure(self, event: TaskEvent, error: BaseException) -> None:
        print(f"task {event.task_id} failed: {error}")


@pytest.mark.timeout(60)
async def test_a_hook_that_exits_is_ignored(
    backend: Backend, loop_errors: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    hostile = (
        await run_between_neighbours(
            backend, pool_tasks.raises_str_exits, None, hooks=PrintingHooks()
        )
    )[2]

    assert (hostile.status, hostile.error_type) == (TaskStatus.FAILED, "StrExits")
    assert "hook on_failure of" in caplog.text and "SystemExit" in caplog.text


@pytest.mark.timeout(90)
async def test_a_worker_process_outlives_its_tasks_hostile_objects(
    db_path: Path, tmp_path: Path
) -> None:
    """The same with a real `sitq worker`: the hostile tasks fail, their neighbours succeed,
    and the worker runs on until SIGTERM, then exits 0."""
    hostile = [
        pool_tasks.returns_unpicklable,
        pool_tasks.raises_str_exits,
        pool_tasks.raises_generator_exit,
        pool_tasks.raises_system_exit,
    ]
    async with TaskQueue(SQLiteBackend(db_path)) as queue:
        worker = WorkerProcess(db_path, tmp_path / "log", tmp_path, "--import", "pool_tasks")
        try:
            worker.wait_ready()
            ids = [await queue.enqueue(pool_tasks.echo, n) for n in range(5)]
            ids[1:1] = [await queue.enqueue(func) for func in hostile]
            results = await queue.gather(ids, timeout=30)
            assert worker.process.poll() is None, worker.describe()  # still running
            worker.send(signal.SIGTERM)
            assert worker.wait(30) == 0, worker.describe()
        finally:
            worker.kill()

    assert all(result is not None for result in results), results
    failed = [(r.status, r.error_type) for r in results if r.value is None]
    assert failed == [
        (TaskStatus.FAILED, "SerializationError"),
        (TaskStatus.FAILED, "StrExits"),
        (TaskStatus.FAILED, "GeneratorExit"),
        (TaskStatus.FAILED, "SystemExit"),
    ]
    assert sorted(r.value for r in results if r.value is not None) == list(range(5))
    assert NEVER_RETRIEVED not in worker.stderr()
