"""The tutorial page's task functions, run through sitq with retry policies instead of the
page's hand-written retry loop.

The functions are the seed's, copied as module-level functions. One change: their
`await asyncio.sleep(x)` becomes `await pause(x)`, which spends *virtual* seconds on the
test's FakeClock, so each attempt lasts exactly as long as on the page (visible in the
history) while the test takes no real time. The worker runs one task at a time, because
concurrent tasks would all advance the one shared virtual clock.

Error classes are the page's own (`TaskError`, `TransientError`, `PermanentError` defined
here, not sitq's), and a policy classifies them by type or by class name.
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Iterator

import pytest

import sitq
from sitq import FakeClock, RetryPolicy, SQLiteBackend, TaskQueue, TaskStatus, Worker

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL

logger = logging.getLogger(__name__)
VIRTUAL: dict[str, FakeClock] = {}
FLAKY_NETWORK = random.Random()  # reseeded by the test that uses it


async def pause(seconds: float) -> None:
    """The seed's asyncio.sleep, in the test's virtual time."""
    await VIRTUAL["clock"].sleep(seconds)


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    VIRTUAL["clock"] = FakeClock()
    yield VIRTUAL["clock"]
    VIRTUAL.clear()


@pytest.fixture
async def worker(backend: SQLiteBackend, clock: FakeClock) -> AsyncIterator[Worker]:
    worker = Worker(backend, clock=clock, concurrency=1, rng=random.Random(0), worker_id="w1")
    yield worker
    await worker.stop()


# --- the seed's tasks ----------------------------------------------------------------------


async def network_task(task_id: int, url: str, should_fail: bool = False):
    """Simulate a network operation that might fail."""
    logger.info(f"Task {task_id}: Simulating network request to {url}")
    await pause(0.5)

    if should_fail:
        raise ConnectionError(f"Network failed for task {task_id}")

    return f"Successfully fetched from {url}"


async def database_task(task_id: int, operation: str):
    """Simulate a database operation."""
    logger.info(f"Task {task_id}: Database {operation}")
    await pause(0.3)

    if operation == "invalid_query":
        raise ValueError(f"Invalid SQL query for task {task_id}")
    elif operation == "connection_lost":
        raise ConnectionError(f"Database connection lost for task {task_id}")

    return f"Database {operation} completed"


async def calculation_task(task_id: int, numbers: list):
    """Perform calculations that might fail."""
    logger.info(f"Task {task_id}: Calculating with {numbers}")

    if not numbers:
        raise ValueError("No numbers provided for calculation")

    result = sum(numbers) / len(numbers)
    return {"task_id": task_id, "average": result}


async def resilient_network_task(task_id: int, url: str):
    """The seed's Step 3 without its in-task retry decorator: sitq retries it instead.
    Its random failures come from a seeded generator, so the run can be replayed."""
    logger.info(f"Resilient task {task_id}: Attempting network request to {url}")
    await pause(0.5)

    if FLAKY_NETWORK.random() < 0.3:  # 30% failure rate
        raise ConnectionError(f"Network timeout for task {task_id}")

    return f"Successfully fetched from {url}"


class TaskError(Exception):
    """Base class for task-specific errors."""


class TransientError(TaskError):
    """Temporary errors that might succeed on retry."""


class PermanentError(TaskError):
    """Errors that won't be resolved by retrying."""


async def smart_processing_task(task_id: int, data_type: str):
    """Task that distinguishes between transient and permanent errors."""
    logger.info(f"Smart task {task_id}: Processing {data_type}")

    if data_type == "transient_fail":
        await pause(0.2)
        raise TransientError(f"Transient error for task {task_id}")

    elif data_type == "permanent_fail":
        await pause(0.1)
        raise PermanentError(f"Permanent error for task {task_id}")

    elif data_type == "eventual_success":
        # As on the page: it fails every time, despite its name (see the variant below).
        await pause(0.1)
        raise TransientError(f"First attempt failed for task {task_id}")

    return f"Successfully processed {data_type}"


async def eventually_successful_task(task_id: int):
    """What "eventual_success" means: the first attempt fails, a retry succeeds."""
    await pause(0.1)
    if sitq.current_task().attempt == 1:
        raise TransientError(f"First attempt failed for task {task_id}")
    return "Successfully processed eventual_success"


async def failing_task(task_id: int):
    """A task that always fails for testing purposes."""
    await pause(0.2)
    raise ValueError(f"Intentional failure for task {task_id}")


async def run(queue: TaskQueue, worker: Worker, policy: RetryPolicy | None, func, *args):
    """Enqueue one call (with `policy`, if any), run the queue dry, return its result."""
    target = queue.with_options(retry=policy) if policy is not None else queue
    task_id = await target.enqueue(func, *args)
    await worker.run_until_idle()
    result = await queue.get_result(task_id)
    assert result is not None
    return result


async def starts(queue: TaskQueue, task_id: str, clock: FakeClock) -> list[float]:
    return [round(a.started_at - clock.start, 6) for a in await queue.history(task_id)]


# --- network task --------------------------------------------------------------------------

NETWORK = RetryPolicy.exponential(0.5, factor=2, max_attempts=3, retry_on=ConnectionError)


async def test_network_task_that_works_succeeds_at_once(queue: TaskQueue, worker: Worker):
    result = await run(queue, worker, NETWORK, network_task, 1, "https://api.example.com")
    assert (result.status, result.value) == (
        TaskStatus.SUCCEEDED,
        "Successfully fetched from https://api.example.com",
    )
    assert (result.attempts, result.duration) == (1, 0.5)


async def test_network_task_that_keeps_failing_is_retried_then_dead_lettered(
    queue: TaskQueue, worker: Worker, clock: FakeClock
):
    result = await run(queue, worker, NETWORK, network_task, 1, "https://down.example", True)
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 3)
    assert (result.error_type, result.error) == ("ConnectionError", "Network failed for task 1")
    # 0.5 s per attempt, then 0.5 s and 1 s of backoff (the page's delay=0.5, backoff=2.0)
    assert await starts(queue, result.task_id, clock) == [0, 1.0, 2.5]
    assert [r.task_id for r in await queue.dead_letters()] == [result.task_id]


async def test_resilient_network_tasks_succeed_through_sitq_retries(
    queue: TaskQueue, worker: Worker
):
    """The page's Step 3 and Test 2: flaky requests, retried by sitq, not by the task."""
    FLAKY_NETWORK.seed(4)
    ids = [
        await queue.with_options(retry=NETWORK).enqueue(
            resilient_network_task, i, f"https://api.example.com/data/{i}"
        )
        for i in range(2, 5)
    ]
    await worker.run_until_idle()

    replay = random.Random(4)  # one draw per attempt, in the order they ran
    for attempt in await queue.history():
        expected = "retrying" if replay.random() < 0.3 else "succeeded"
        assert attempt.outcome == expected
        if expected == "retrying":
            assert (
                attempt.error_message
                == f"Network timeout for task {ids.index(attempt.task_id) + 2}"
            )
    results = await queue.gather(ids)
    assert all(r is not None and r.is_success() for r in results)
    assert sum(r.attempts for r in results if r) > 3  # this seed makes some retries


# --- database task -------------------------------------------------------------------------

DATABASE = RetryPolicy.exponential(0.3, max_attempts=3, give_up_on=ValueError)


@pytest.mark.parametrize(
    ("operation", "status", "attempts", "error_type"),
    [
        ("read", TaskStatus.SUCCEEDED, 1, None),
        ("invalid_query", TaskStatus.FAILED, 1, "ValueError"),  # permanent: not retried
        ("connection_lost", TaskStatus.FAILED, 3, "ConnectionError"),  # retried, exhausted
    ],
)
async def test_database_task_is_classified_by_its_error(
    queue: TaskQueue,
    worker: Worker,
    operation: str,
    status: TaskStatus,
    attempts: int,
    error_type: str | None,
):
    result = await run(queue, worker, DATABASE, database_task, 7, operation)
    assert (result.status, result.attempts, result.error_type) == (status, attempts, error_type)
    if status is TaskStatus.SUCCEEDED:
        assert result.value == f"Database {operation} completed"


# --- calculation task ----------------------------------------------------------------------


async def test_calculation_task_with_no_numbers_fails_with_value_error(
    queue: TaskQueue, worker: Worker
):
    result = await run(queue, worker, None, calculation_task, 3, [])
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 1)
    assert (result.error_type, result.error) == (
        "ValueError",
        "No numbers provided for calculation",
    )


async def test_calculation_task_returns_the_average(queue: TaskQueue, worker: Worker):
    result = await run(queue, worker, None, calculation_task, 3, [1, 2, 3, 4])
    assert result.status is TaskStatus.SUCCEEDED
    assert result.value == {"task_id": 3, "average": 2.5}


# --- smart processing: the page's own error classes ----------------------------------------


def test_the_pages_error_classes_are_not_sitqs() -> None:
    assert not issubclass(TransientError, sitq.TransientError)
    assert not issubclass(PermanentError, sitq.PermanentError)


SMART = RetryPolicy.exponential(0.2, max_attempts=3, retry_on=TransientError)


async def test_smart_transient_failure_is_retried_to_exhaustion(
    queue: TaskQueue, worker: Worker, clock: FakeClock
):
    result = await run(queue, worker, SMART, smart_processing_task, 100, "transient_fail")
    assert (result.status, result.attempts, result.error_type) == (
        TaskStatus.FAILED,
        3,
        "TransientError",
    )
    assert await starts(queue, result.task_id, clock) == [0, 0.4, 1.0]


async def test_smart_permanent_failure_is_not_retried(queue: TaskQueue, worker: Worker):
    result = await run(queue, worker, SMART, smart_processing_task, 100, "permanent_fail")
    assert (result.status, result.attempts, result.error_type) == (
        TaskStatus.FAILED,
        1,
        "PermanentError",
    )
    assert result.error == "Permanent error for task 100"


async def test_smart_permanent_failure_by_name_beats_retry_everything(
    queue: TaskQueue, worker: Worker
):
    policy = RetryPolicy.fixed(0.1, max_attempts=3, give_up_on="PermanentError")
    result = await run(queue, worker, policy, smart_processing_task, 100, "permanent_fail")
    assert result.attempts == 1


async def test_smart_eventual_success_as_written_fails_every_time(queue: TaskQueue, worker: Worker):
    """The page's "eventual_success" branch always raises: retried, it is exhausted."""
    result = await run(queue, worker, SMART, smart_processing_task, 100, "eventual_success")
    assert (result.status, result.attempts) == (TaskStatus.FAILED, 3)
    assert result.error == "First attempt failed for task 100"


@pytest.mark.parametrize("retry_on", [TransientError, "TransientError", [TaskError]])
async def test_smart_eventual_success_succeeds_on_the_retry(
    queue: TaskQueue, worker: Worker, retry_on: object
):
    policy = RetryPolicy.exponential(0.2, max_attempts=3, retry_on=retry_on)
    result = await run(queue, worker, policy, eventually_successful_task, 100)
    assert (result.status, result.value, result.attempts) == (
        TaskStatus.SUCCEEDED,
        "Successfully processed eventual_success",
        2,
    )
    first, _ = await queue.history(result.task_id)
    assert (first.error_type, first.next_delay) == ("TransientError", 0.2)


async def test_smart_success_for_ordinary_data(queue: TaskQueue, worker: Worker):
    result = await run(queue, worker, SMART, smart_processing_task, 100, "images")
    assert (result.status, result.value) == (TaskStatus.SUCCEEDED, "Successfully processed images")


# --- the page's failing task and dead letter collection -------------------------------------


async def test_failing_task_fails_at_once_and_is_collected_as_a_dead_letter(
    queue: TaskQueue, worker: Worker
):
    """Tests 1 and 4 of the page: a plain failure is final (no retry by default), and
    `dead_letters()` replaces the page's hand-made list of failed tasks."""
    ids = [await queue.enqueue(failing_task, i) for i in range(5, 8)]
    await worker.run_until_idle()

    dead = await queue.dead_letters()
    assert [d.task_id for d in dead] == ids
    assert [d.error for d in dead] == [f"Intentional failure for task {i}" for i in range(5, 8)]
    assert all(d.attempts == 1 and d.traceback for d in dead)
