"""Issue 4, point 7: where a task runs. Async functions on the worker's loop, plain ones
in its threads, and, when asked with executor="process", in a pool of worker processes;
what cannot make the trip to a process fails with an error that says why."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pool_tasks
import pytest
import reliability_tasks as rt
from worker_processes import is_running, wait_until

from sitq import (
    FakeClock,
    InvalidOptionError,
    RetryPolicy,
    SerializationError,
    SQLiteBackend,
    TaskQueue,
    TaskStatus,
    Worker,
)
from sitq.engine.pools import ProcessPool

# Module-level state is shared by reference with tasks that run in *this* process only.
TOUCHED: list[int] = []


def where() -> tuple[int, str]:
    return os.getpid(), threading.current_thread().name


async def where_async() -> tuple[int, str]:
    return os.getpid(), threading.current_thread().name


def cpu_bound(n: int) -> int:
    return sum(i * i for i in range(n))


def touch(n: int) -> int:
    TOUCHED.append(n)
    return len(TOUCHED)


def returns_a_generator() -> object:
    return (i for i in range(3))


class NeedsTwoArguments(Exception):
    """An exception whose __init__ does not match its args: it cannot be unpickled as is."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code


def raises_needs_two() -> None:
    raise NeedsTwoArguments(503, "busy")


class HoldsALock(Exception):
    def __init__(self) -> None:
        super().__init__("gave up")
        self.lock = threading.Lock()


def raises_holding_a_lock() -> None:
    raise HoldsALock()


def dies() -> None:
    os._exit(1)  # the process vanishes, as after a segfault or the OOM killer


@pytest.fixture
async def pool_worker(backend: SQLiteBackend, clock: FakeClock) -> AsyncIterator[Worker]:
    worker = Worker(backend, clock=clock, worker_id="w1", processes=1)
    yield worker
    await worker.stop()


async def run_all(queue: TaskQueue, worker: Worker, ids: list[str]) -> list:
    await worker.run_until_idle()
    results = await queue.gather(ids, timeout=30)
    assert all(r is not None for r in results)
    return results


async def test_plain_functions_run_in_threads_async_ones_on_the_loop(
    queue: TaskQueue, worker: Worker
) -> None:
    ids = [await queue.enqueue(where), await queue.enqueue(where_async)]
    plain, coro = await run_all(queue, worker, ids)

    assert plain.value[0] == coro.value[0] == os.getpid()
    assert plain.value[1].startswith("sitq-task")  # the worker's thread pool
    assert coro.value[1] == threading.current_thread().name  # the loop's own thread


async def test_process_executor_runs_in_another_process(
    queue: TaskQueue, pool_worker: Worker
) -> None:
    process = queue.with_options(executor="process")
    ids = [await process.enqueue(where), await process.enqueue(cpu_bound, 1000)]
    ids.append(await queue.with_options(executor="thread").enqueue(where))
    in_process, computed, in_thread = await run_all(queue, pool_worker, ids)

    assert in_process.value[0] != os.getpid()
    assert computed.value == sum(i * i for i in range(1000))
    assert in_thread.value[0] == os.getpid()


async def test_a_process_task_changes_its_own_copy_of_globals(
    queue: TaskQueue, pool_worker: Worker
) -> None:
    TOUCHED.clear()
    [result] = await run_all(
        queue, pool_worker, [await queue.with_options(executor="process").enqueue(touch, 1)]
    )
    assert result.value == 1  # the child appended to its copy of TOUCHED...
    assert TOUCHED == []  # ...and ours never changed: return results instead


async def test_lambdas_and_closures_over_data_can_go_to_a_process(
    queue: TaskQueue, pool_worker: Worker
) -> None:
    """cloudpickle sends them by value, as it sends functions defined in a notebook."""
    base = 10
    process = queue.with_options(executor="process")
    ids = [
        await process.enqueue(lambda: os.getpid()),
        await process.enqueue(lambda n: n + base, 5),
    ]
    pid, added = await run_all(queue, pool_worker, ids)
    assert pid.value != os.getpid() and added.value == 15


async def test_a_closure_over_a_lock_is_refused_at_enqueue(queue: TaskQueue) -> None:
    """It never reaches a process: the call must first become bytes in the database."""
    lock = threading.Lock()

    with pytest.raises(SerializationError) as caught:
        await queue.with_options(executor="process").enqueue(lambda: lock.locked())

    message = str(caught.value)
    assert "the task function" in message and "cannot pickle '_thread.lock'" in message
    assert "create locks and connections inside the task" in message
    assert sum((await queue.counts()).values()) == 0


async def test_a_value_that_cannot_come_back_fails_the_task_and_says_why(
    queue: TaskQueue, pool_worker: Worker
) -> None:
    task_id = await queue.with_options(executor="process").enqueue(returns_a_generator)
    [result] = await run_all(queue, pool_worker, [task_id])

    assert result.status is TaskStatus.FAILED
    assert result.error_type == "SerializationError"
    assert "return value of type generator back from the worker process" in result.error
    assert "turn generators into lists" in result.error


async def test_an_exception_that_cannot_be_unpickled_fails_only_its_task(
    queue: TaskQueue, pool_worker: Worker
) -> None:
    """Sent as is, it would break the pool for every task; it comes back as itself, so a
    policy that retries on its type still recognises it."""
    retry = RetryPolicy.fixed(1, max_attempts=2, retry_on=NeedsTwoArguments)
    process = queue.with_options(executor="process", retry=retry)
    bad = await process.enqueue(raises_needs_two)
    [failed] = await run_all(queue, pool_worker, [bad])
    [after] = await run_all(queue, pool_worker, [await process.enqueue(cpu_bound, 10)])

    assert failed.status is TaskStatus.FAILED and failed.attempts == 2
    assert failed.error_type == "NeedsTwoArguments" and "503: busy" in failed.error
    assert "raises_needs_two" in failed.traceback  # the child's traceback is kept
    assert after.status is TaskStatus.SUCCEEDED and after.value == 285


async def test_an_exception_that_cannot_be_pickled_is_described(
    queue: TaskQueue, pool_worker: Worker
) -> None:
    task_id = await queue.with_options(executor="process").enqueue(raises_holding_a_lock)
    [result] = await run_all(queue, pool_worker, [task_id])

    assert result.error_type == "SerializationError"
    assert "the task raised HoldsALock: gave up, which cannot be sent back" in result.error


async def test_a_dead_process_fails_its_task_and_the_pool_is_renewed(
    queue: TaskQueue, pool_worker: Worker
) -> None:
    process = queue.with_options(executor="process")
    [crashed] = await run_all(queue, pool_worker, [await process.enqueue(dies)])
    [after] = await run_all(queue, pool_worker, [await process.enqueue(where)])

    assert crashed.status is TaskStatus.FAILED
    assert crashed.error_type == "BrokenProcessPool"
    assert after.status is TaskStatus.SUCCEEDED and after.value[0] != os.getpid()


def test_unknown_executor_is_refused() -> None:
    from sitq import TaskOptions

    with pytest.raises(InvalidOptionError, match="thread, process"):
        TaskOptions(executor="gpu")  # type: ignore[arg-type]


@pytest.fixture
def log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The executions log of tests/reliability_tasks.py, inherited by pool processes."""
    path = tmp_path / "executions.log"
    monkeypatch.setenv(rt.LOG_ENV, str(path))
    return path


async def test_a_dead_process_takes_no_neighbour_with_it(
    queue: TaskQueue, backend: SQLiteBackend, clock: FakeClock, log: Path, tmp_path: Path
) -> None:
    """Issue 21, point 3: when one pool process dies, the pool fails every call it holds.
    Each runs once more in a process of its own: the neighbour succeeds, the task that
    killed its process fails alone."""
    release = tmp_path / "release"
    process = queue.with_options(executor="process")
    held = await process.enqueue(pool_tasks.hold, "held", str(release), 60)
    killer = await process.enqueue(pool_tasks.die_when, str(log))  # once "held" has started
    worker = Worker(backend, clock=clock, worker_id="w1", processes=2)
    running = asyncio.create_task(worker.run_once())

    async def killer_failed() -> bool:
        return (await queue.get_task(killer)).status is TaskStatus.FAILED

    await wait_until(killer_failed, 30, "the task that kills its process to fail")
    release.touch()
    await running
    await worker.stop()

    [held_result, killer_result] = await queue.gather([held, killer], timeout=10)
    assert held_result.status is TaskStatus.SUCCEEDED and held_result.value == "held"
    assert killer_result.error_type == "BrokenProcessPool"
    assert rt.tally(log, "start") == {"held": 2}  # the first run died with its neighbour


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
async def test_stop_ends_the_process_of_a_task_it_hands_back(
    queue: TaskQueue, backend: SQLiteBackend, clock: FakeClock, log: Path, tmp_path: Path
) -> None:
    """Issue 21, point 3: a task still running after the grace goes back to the queue, and
    the process running it ends too, instead of computing on for nobody (and holding the
    interpreter at exit, which waits for a pool's processes)."""
    process = queue.with_options(executor="process")
    task_id = await process.enqueue(pool_tasks.hold, "held", str(tmp_path / "never"), 60)
    worker = Worker(backend, clock=clock, worker_id="w1", processes=1, shutdown_grace=0.1)
    running = asyncio.create_task(worker.run_once())

    async def started() -> bool:
        return bool(rt.tally(log, "start"))

    await wait_until(started, 30, "the task to start in a pool process")
    [(_, _, pid)] = rt.read_log(log)
    await worker.stop()
    await running

    async def ended() -> bool:
        return not is_running(pid)

    await wait_until(ended, 10, f"pool process {pid} to end")
    assert (await queue.get_task(task_id)).status is TaskStatus.QUEUED


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
async def test_a_pool_process_ends_on_sigterm_under_a_loop_signal_handler() -> None:
    """Issue 21, point 3: `sitq worker` handles SIGTERM on its event loop; a forked child
    inherited that handler, which swallows the signal, and ignored SIGTERM for good."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, lambda: None)
    pool = ProcessPool(1)
    try:
        pid = await loop.run_in_executor(pool, os.getpid)
        os.kill(pid, signal.SIGTERM)

        async def ended() -> bool:
            return not is_running(pid)

        await wait_until(ended, 10, f"pool process {pid} to end on SIGTERM")
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        pool.kill()
