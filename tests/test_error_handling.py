"""Error handling end to end: retries run by the worker, classification, dead letters,
time limits, cancellation, attempt history, hooks and logging.

Every test drives a real worker over a real SQLite file with a FakeClock, so a retry due
in 30 s runs at once and every timestamp below is exact. Tasks are module-level functions
(sent by reference); they find their attempt number with `current_task()` instead of
counting in globals, and wait on module-level events where a test must watch them run.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sqlite3
import threading
from collections.abc import Iterator
from itertools import pairwise

import pytest

from sitq import (
    FakeClock,
    PermanentError,
    Retry,
    RetryPolicy,
    SQLiteBackend,
    TaskEvent,
    TaskNotFoundError,
    TaskQueue,
    TaskStateError,
    TaskStatus,
    TaskTimeout,
    TransientError,
    Worker,
    WorkerHooks,
    current_task,
    task,
)

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL

# --- module-level tasks and the state tests watch them through ---------------------------

VIRTUAL: dict[str, FakeClock] = {}  # the test's clock, so a task can spend virtual time
SEEN: dict[str, object] = {}  # what tasks report back (e.g. "I was cancelled")
EVENTS: dict[str, asyncio.Event] = {}
THREAD_GATE = threading.Event()


@pytest.fixture
def clock() -> Iterator[FakeClock]:
    """The conftest clock, also published to tasks that spend virtual time."""
    VIRTUAL["clock"] = FakeClock()
    SEEN.clear()
    yield VIRTUAL["clock"]
    VIRTUAL.clear()


async def flaky(failures: int) -> str:
    """Fail the first `failures` attempts with a ConnectionError, then succeed."""
    attempt = current_task().attempt
    if attempt <= failures:
        raise ConnectionError(f"outage on attempt {attempt}")
    return f"ok on attempt {attempt}"


async def raise_it(error: BaseException) -> None:
    raise error


async def retry_me(delay: float | None) -> str:
    """Ask for a retry with a chosen delay on the first attempt; succeed on the next."""
    if current_task().attempt == 1:
        raise Retry(delay=delay)
    return "done"


async def slow_flaky() -> str:
    """Run for 0.5 virtual seconds; the first attempt then fails."""
    await VIRTUAL["clock"].sleep(0.5)
    if current_task().attempt == 1:
        raise ConnectionError("first try lost")
    return "second try ok"


async def hangs_once(seconds: float) -> str:
    """Hang on the first attempt (until cancelled); answer at once afterwards."""
    if current_task().attempt == 1:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            SEEN["cancelled"] = True
            raise
    return "fast enough"


def blocking_thread_task() -> str:
    """A plain function: runs in a thread, which a time limit cannot stop."""
    THREAD_GATE.wait(timeout=5)
    SEEN["thread finished"] = True
    return "too late"


async def wait_forever() -> None:
    EVENTS["started"].set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        SEEN["cancelled"] = True
        raise


async def with_option_names(retry: str, timeout: int) -> None:
    """A task whose own parameters are called like options: they must still reach it."""
    raise ValueError(f"retry={retry} timeout={timeout}")


@task(retry=RetryPolicy.fixed(0, max_attempts=2))
async def decorated_failure() -> None:
    raise ConnectionError("always")


async def plain_failure() -> None:
    raise ConnectionError("always")


def worker_for(backend: SQLiteBackend, clock: FakeClock, **kwargs: object) -> Worker:
    return Worker(backend, clock=clock, rng=random.Random(0), worker_id="w1", **kwargs)


async def outcomes(queue: TaskQueue, task_id: str) -> list[str]:
    return [a.outcome for a in await queue.history(task_id)]


# --- retries, run by the worker ----------------------------------------------------------


async def test_a_plain_failure_is_final_at_once_by_default(queue: TaskQueue, worker: Worker):
    task_id = await queue.enqueue(flaky, 5)
    await worker.run_until_idle()

    result = await queue.get_result(task_id)
    assert result is not None and result.status is TaskStatus.FAILED
    assert result.attempts == 1 and result.error_type == "ConnectionError"
    assert await outcomes(queue, task_id) == ["failed"]


async def test_fails_twice_then_succeeds_with_three_attempts(queue: TaskQueue, worker: Worker):
    policy = RetryPolicy.fixed(1.0, max_attempts=3)
    task_id = await queue.with_options(retry=policy).enqueue(flaky, 2)
    await worker.run_until_idle()

    result = await queue.get_result(task_id)
    assert result is not None
    assert (result.status, result.value, result.attempts) == (
        TaskStatus.SUCCEEDED,
        "ok on attempt 3",
        3,
    )
    assert await outcomes(queue, task_id) == ["retrying", "retrying", "succeeded"]


async def test_a_retry_waits_in_the_database_as_retrying_not_in_the_task(
    queue: TaskQueue, worker: Worker, clock: FakeClock
):
    """The failed attempt ends; the row waits as `retrying`, due at the computed time."""
    task_id = await queue.with_options(retry=RetryPolicy.fixed(30, max_attempts=2)).enqueue(
        flaky, 1
    )
    assert await worker.run_once() == 1

    info = await queue.get_task(task_id)
    assert (info.status, info.attempts, info.due_at) == (
        TaskStatus.RETRYING,
        1,
        clock.now() + 30,
    )
    assert await worker.run_once() == 0  # not due yet: nobody is sleeping on it
    clock.advance(30)
    assert await worker.run_once() == 1
    assert await queue.status(task_id) is TaskStatus.SUCCEEDED


async def test_an_exponential_policy_runs_exactly_on_its_schedule(
    queue: TaskQueue, worker: Worker, clock: FakeClock
):
    policy = RetryPolicy.exponential(1.0, factor=2, max_attempts=5)
    task_id = await queue.with_options(retry=policy).enqueue(flaky, 99)
    await worker.run_until_idle()

    history = await queue.history(task_id)
    assert [a.started_at - clock.start for a in history] == [0, 1, 3, 7, 15]
    assert [a.next_delay for a in history] == [1, 2, 4, 8, None]
    assert all(a.started_at == a.scheduled_for for a in history)  # virtual time: never late
    assert [a.outcome for a in history] == ["retrying"] * 4 + ["failed"]


@pytest.mark.parametrize("jitter", ["full", "equal"])
@pytest.mark.parametrize("seed", [0, 1, 7])
async def test_jitter_stays_in_its_band_and_replays_for_a_seed(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock, jitter: str, seed: int
):
    policy = RetryPolicy.exponential_jitter(1.0, cap=8, jitter=jitter, max_attempts=7)
    worker = Worker(backend, clock=clock, rng=random.Random(seed))
    task_id = await queue.with_options(retry=policy).enqueue(flaky, 99)
    await worker.run_until_idle()
    await worker.stop()

    history = await queue.history(task_id)
    delays = [a.next_delay for a in history[:-1]]
    for attempt, delay in enumerate(delays, start=1):
        ceiling = min(8.0, 2.0 ** (attempt - 1))
        low = 0.0 if jitter == "full" else ceiling / 2
        assert low <= delay <= ceiling, (attempt, delay)
    assert delays == policy.preview(seed=seed)  # the same seed, the same schedule
    starts = [a.started_at for a in history]
    assert [b - a for a, b in pairwise(starts)] == pytest.approx(delays)


@pytest.mark.parametrize("seed", [0, 3])
async def test_decorrelated_jitter_grows_from_its_previous_delay(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock, seed: int
):
    """The worker hands each retry the delay it chose last time (stored with the task)."""
    policy = RetryPolicy.exponential_jitter(1.0, cap=100, jitter="decorrelated", max_attempts=8)
    worker = Worker(backend, clock=clock, rng=random.Random(seed))
    task_id = await queue.with_options(retry=policy).enqueue(flaky, 99)
    await worker.run_until_idle()
    await worker.stop()

    delays = [a.next_delay for a in (await queue.history(task_id))[:-1]]
    assert delays == policy.preview(seed=seed)
    previous = 1.0
    for delay in delays:
        assert 1.0 <= delay <= 3 * previous
        previous = delay
    # Without the previous delay every draw would stay in [base, 3 * base] = [1, 3].
    assert max(delays) > 3


async def test_a_database_made_before_last_delay_gains_the_column(db_path, clock: FakeClock):
    """Files from before the column existed are upgraded on open, and retry as before."""
    first = SQLiteBackend(db_path)
    await first.connect()
    await first.close()
    with sqlite3.connect(db_path) as conn:
        conn.execute("ALTER TABLE sitq_tasks DROP COLUMN last_delay")

    backend = SQLiteBackend(db_path)
    policy = RetryPolicy.exponential_jitter(1.0, cap=100, jitter="decorrelated", max_attempts=4)
    async with TaskQueue(backend, clock=clock) as queue:
        worker = Worker(backend, clock=clock, rng=random.Random(0))
        task_id = await queue.with_options(retry=policy).enqueue(flaky, 99)
        await worker.run_until_idle()
        await worker.stop()
        delays = [a.next_delay for a in (await queue.history(task_id))[:-1]]
    assert delays == policy.preview(seed=0)


@pytest.mark.parametrize(
    ("policy", "error", "attempts"),
    [
        (RetryPolicy.fixed(0, max_attempts=4), PermanentError("bad input"), 1),
        (RetryPolicy.fixed(0, max_attempts=4), TransientError("blip"), 4),
        (RetryPolicy.fixed(0, max_attempts=4, retry_on=ConnectionError), ValueError("no"), 1),
        (RetryPolicy.fixed(0, max_attempts=4, retry_on=ConnectionError), ConnectionError(), 4),
        (RetryPolicy.fixed(0, max_attempts=4, retry_on="ConnectionError"), ConnectionError(), 4),
        (
            RetryPolicy.fixed(0, max_attempts=4, retry_on=Exception, give_up_on=ValueError),
            ValueError("no"),
            1,
        ),
        (
            RetryPolicy.fixed(0, max_attempts=4, retry_on=Exception, give_up_on=ValueError),
            KeyError("k"),
            4,
        ),
    ],
    ids=[
        "permanent",
        "transient",
        "not-in-retry_on",
        "in-retry_on",
        "by-name",
        "give_up_on",
        "give_up_on-other",
    ],
)
async def test_classification_decides_what_the_worker_retries(
    queue: TaskQueue, worker: Worker, policy: RetryPolicy, error: Exception, attempts: int
):
    task_id = await queue.with_options(retry=policy).enqueue(raise_it, error)
    await worker.run_until_idle()

    result = await queue.get_result(task_id)
    assert result is not None and result.status is TaskStatus.FAILED
    assert (result.attempts, result.error_type) == (attempts, type(error).__name__)


async def test_error_classes_sent_by_value_still_classify_by_type(queue: TaskQueue, worker: Worker):
    """A class from a notebook (here: a local one) travels by value, inside the task and
    inside the policy; both copies must still be the same class to the worker."""

    class Glitch(Exception):
        pass

    async def glitchy() -> None:
        raise Glitch("again")

    policy = RetryPolicy.fixed(0, max_attempts=3, retry_on=Glitch)
    task_id = await queue.with_options(retry=policy).enqueue(glitchy)
    await worker.run_until_idle()
    assert await outcomes(queue, task_id) == ["retrying", "retrying", "failed"]


async def test_a_retry_request_delay_wins_over_the_policy(
    queue: TaskQueue, worker: Worker, clock: FakeClock
):
    policy = RetryPolicy.exponential(1.0, max_attempts=3)
    asked = await queue.with_options(retry=policy).enqueue(retry_me, 7.0)
    await worker.run_until_idle()
    history = await queue.history(asked)
    assert [a.next_delay for a in history] == [7.0, None]
    assert history[1].started_at - history[0].finished_at == 7.0
    assert await queue.status(asked) is TaskStatus.SUCCEEDED

    default = await queue.with_options(retry=policy).enqueue(retry_me, None)
    await worker.run_until_idle()
    assert [a.next_delay for a in await queue.history(default)] == [1.0, None]


async def test_a_retry_request_still_needs_an_attempt_left(queue: TaskQueue, worker: Worker):
    task_id = await queue.enqueue(retry_me, 1.0)  # default policy: one attempt only
    await worker.run_until_idle()
    result = await queue.get_result(task_id)
    assert result is not None
    assert (result.status, result.error_type, result.attempts) == (TaskStatus.FAILED, "Retry", 1)


async def test_options_per_call_beat_the_decorator_which_beats_the_worker(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock
):
    worker = worker_for(backend, clock, retry=RetryPolicy.fixed(0, max_attempts=4))
    by_worker = await queue.enqueue(plain_failure)
    by_decorator = await queue.enqueue(decorated_failure)
    by_call = await queue.with_options(retry=RetryPolicy.fixed(0, max_attempts=3)).enqueue(
        decorated_failure
    )
    await worker.run_until_idle()
    await worker.stop()

    attempts = [len(await queue.history(i)) for i in (by_worker, by_decorator, by_call)]
    assert attempts == [4, 2, 3]


async def test_retry_options_never_collide_with_task_kwargs(queue: TaskQueue, worker: Worker):
    policy = RetryPolicy.fixed(0, max_attempts=2)
    task_id = await queue.with_options(retry=policy, timeout=5).enqueue(
        with_option_names, retry="mine", timeout=7
    )
    await worker.run_until_idle()

    result = await queue.get_result(task_id)
    assert result is not None
    assert (result.attempts, result.error) == (2, "retry=mine timeout=7")


# --- dead letters --------------------------------------------------------------------------


async def test_exhausted_retries_land_in_dead_letters_and_can_be_requeued(
    queue: TaskQueue, worker: Worker
):
    policy = RetryPolicy.fixed(1.0, max_attempts=3)
    task_id = await queue.with_options(retry=policy).enqueue(flaky, 4)
    await worker.run_until_idle()

    [dead] = await queue.dead_letters()
    assert (dead.task_id, dead.status, dead.attempts) == (task_id, TaskStatus.FAILED, 3)
    assert (dead.error_type, dead.error) == ("ConnectionError", "outage on attempt 3")
    assert dead.traceback is not None and "in flaky" in dead.traceback
    assert dead.task_name == "flaky"

    await queue.requeue(task_id)
    assert await queue.status(task_id) is TaskStatus.QUEUED
    await worker.run_until_idle()

    # A fresh budget: attempt 4 fails and is retried again; attempt 5 succeeds.
    history = await queue.history(task_id)
    assert [a.attempt for a in history] == [1, 2, 3, 4, 5]
    assert [a.outcome for a in history] == [
        "retrying",
        "retrying",
        "failed",
        "retrying",
        "succeeded",
    ]
    assert await queue.dead_letters() == []
    with pytest.raises(TaskStateError):
        await queue.requeue(task_id)  # it succeeded: nothing to requeue


async def test_purge_deletes_dead_letters_but_keeps_their_history(queue: TaskQueue, worker: Worker):
    dead = [await queue.enqueue(flaky, 1) for _ in range(2)]
    alive = await queue.enqueue(flaky, 0)
    await worker.run_until_idle()

    assert {r.task_id for r in await queue.dead_letters()} == set(dead)
    assert await queue.purge_dead_letters() == 2
    assert await queue.dead_letters() == []
    assert await queue.status(alive) is TaskStatus.SUCCEEDED
    with pytest.raises(TaskNotFoundError):
        await queue.get_task(dead[0])
    assert {a.task_id for a in await queue.history()} == {*dead, alive}
    assert [a.outcome for a in await queue.history(dead[0])] == ["failed"]


# --- time limits ---------------------------------------------------------------------------


async def test_an_async_task_is_cancelled_at_its_time_limit(queue: TaskQueue, worker: Worker):
    task_id = await queue.with_options(timeout=0.05).enqueue(hangs_once, 30)
    await worker.run_until_idle()

    result = await queue.get_result(task_id)
    assert result is not None and result.status is TaskStatus.FAILED
    assert result.error_type == "TaskTimeout"
    assert "0.05s" in (result.error or "") and "cancelled" in (result.error or "")
    assert SEEN["cancelled"] is True  # the coroutine really was stopped


async def test_a_timeout_can_be_classified_by_the_policy(queue: TaskQueue, worker: Worker):
    retried = RetryPolicy.fixed(0, max_attempts=2, retry_on=TaskTimeout)
    task_id = await queue.with_options(retry=retried, timeout=0.05).enqueue(hangs_once, 30)
    await worker.run_until_idle()
    history = await queue.history(task_id)
    assert [(a.outcome, a.error_type) for a in history] == [
        ("retrying", "TaskTimeout"),
        ("succeeded", None),
    ]

    final = RetryPolicy.fixed(0, max_attempts=2, retry_on=Exception, give_up_on=TaskTimeout)
    task_id = await queue.with_options(retry=final, timeout=0.05).enqueue(hangs_once, 30)
    await worker.run_until_idle()
    assert await outcomes(queue, task_id) == ["failed"]


async def test_a_thread_task_over_its_limit_is_abandoned_and_reported(
    queue: TaskQueue, worker: Worker, caplog: pytest.LogCaptureFixture
):
    THREAD_GATE.clear()
    caplog.set_level(logging.INFO, logger="sitq")
    try:
        task_id = await queue.with_options(timeout=0.05).enqueue(blocking_thread_task)
        await worker.run_until_idle()

        result = await queue.get_result(task_id)
        assert result is not None and result.error_type == "TaskTimeout"
        assert "abandoned" in (result.error or "")
        assert "thread finished" not in SEEN  # the thread still runs: it was abandoned
        assert any(
            task_id in r.getMessage() and "abandoned" in r.getMessage() for r in caplog.records
        )

        after = await queue.enqueue(flaky, 0)  # the worker carries on meanwhile
        await worker.run_until_idle()
        assert await queue.status(after) is TaskStatus.SUCCEEDED
    finally:
        THREAD_GATE.set()


# --- cancellation --------------------------------------------------------------------------


async def test_cancel_waiting_tasks_queued_scheduled_and_retrying(queue: TaskQueue, worker: Worker):
    queued = await queue.enqueue(flaky, 0)
    scheduled = await queue.with_options(delay=60).enqueue(flaky, 0)
    retrying = await queue.with_options(retry=RetryPolicy.fixed(10, max_attempts=3)).enqueue(
        flaky, 5
    )
    assert await queue.cancel(queued) is True
    await worker.run_once()  # runs only `retrying`, whose first attempt fails
    assert await queue.status(retrying) is TaskStatus.RETRYING
    assert await queue.cancel(scheduled) is True
    assert await queue.cancel(retrying) is True
    assert await worker.run_until_idle() == 0

    for task_id in (queued, scheduled, retrying):
        assert await queue.status(task_id) is TaskStatus.CANCELLED
    assert await outcomes(queue, queued) == []
    assert await outcomes(queue, retrying) == ["retrying"]
    assert await queue.cancel(queued) is False  # already final
    with pytest.raises(TaskNotFoundError):
        await queue.cancel("no-such-task")


async def test_cancel_stops_a_running_async_task(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock
):
    """The heartbeat (every lease/3 on the worker's clock) notices the cancel: moving the
    FakeClock a third of a lease on makes it beat at once, in no real time."""
    EVENTS["started"] = asyncio.Event()
    worker = worker_for(backend, clock, lease_seconds=30)
    task_id = await queue.enqueue(wait_forever)
    running = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(EVENTS["started"].wait(), timeout=5)
    assert await queue.status(task_id) is TaskStatus.RUNNING

    assert await queue.cancel(task_id) is True
    assert not running.done()  # nothing happens until the next heartbeat
    clock.advance(10)
    await asyncio.wait_for(running, timeout=5)
    await worker.stop()

    assert await queue.status(task_id) is TaskStatus.CANCELLED
    assert SEEN["cancelled"] is True
    assert await outcomes(queue, task_id) == ["cancelled"]


# --- history, hooks, logging ---------------------------------------------------------------


async def test_every_attempt_is_recorded_with_all_its_fields(
    queue: TaskQueue, worker: Worker, clock: FakeClock
):
    t0 = clock.now()
    task_id = await queue.with_options(retry=RetryPolicy.fixed(2.0, max_attempts=3)).enqueue(
        slow_flaky
    )
    other = await queue.enqueue(flaky, 0)
    await worker.run_until_idle()

    first, second = await queue.history(task_id)
    assert (first.task_id, first.task_name, first.attempt, first.worker_id) == (
        task_id,
        "slow_flaky",
        1,
        "w1",
    )
    assert (first.scheduled_for, first.started_at, first.finished_at) == (t0, t0, t0 + 0.5)
    assert (first.outcome, first.error_type, first.error_message, first.next_delay) == (
        "retrying",
        "ConnectionError",
        "first try lost",
        2.0,
    )
    assert (second.attempt, second.scheduled_for, second.started_at) == (2, t0 + 2.5, t0 + 2.5)
    assert (second.finished_at, second.outcome, second.error_type, second.next_delay) == (
        t0 + 3.0,
        "succeeded",
        None,
        None,
    )
    everything = await queue.history()
    assert {a.task_id for a in everything} == {task_id, other} and len(everything) == 3


class Recorder(WorkerHooks):
    """Hooks that write down every call (one of them misbehaves on purpose)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, object]] = []

    def on_success(self, event: TaskEvent, value: object) -> None:
        self.calls.append(("success", event.attempt, value))
        raise RuntimeError("a broken monitor must not break the work")

    def on_failure(self, event: TaskEvent, error: BaseException) -> None:
        self.calls.append(("failure", event.attempt, type(error).__name__))

    def on_retry(self, event: TaskEvent, error: BaseException, delay: float) -> None:
        self.calls.append(("retry", event.attempt, delay))

    def on_dead_letter(self, event: TaskEvent, error: BaseException) -> None:
        self.calls.append(("dead letter", event.attempt, str(error)))


async def test_hooks_hear_each_success_failure_retry_and_dead_letter(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock
):
    hooks = Recorder()
    worker = worker_for(backend, clock, hooks=hooks, retry=RetryPolicy.fixed(1, max_attempts=2))
    ok = await queue.enqueue(flaky, 1)
    await worker.run_until_idle()
    assert hooks.calls == [
        ("failure", 1, "ConnectionError"),
        ("retry", 1, 1.0),
        ("success", 2, "ok on attempt 2"),
    ]
    assert await queue.status(ok) is TaskStatus.SUCCEEDED  # the raising hook was ignored

    hooks.calls.clear()
    await queue.enqueue(flaky, 9)
    await worker.run_until_idle()
    assert hooks.calls == [
        ("failure", 1, "ConnectionError"),
        ("retry", 1, 1.0),
        ("failure", 2, "ConnectionError"),
        ("dead letter", 2, "outage on attempt 2"),
    ]
    await worker.stop()


async def test_a_cancellation_is_not_reported_as_a_failure(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock
):
    EVENTS["started"] = asyncio.Event()
    hooks = Recorder()
    worker = worker_for(backend, clock, hooks=hooks, lease_seconds=30)
    task_id = await queue.enqueue(wait_forever)
    running = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(EVENTS["started"].wait(), timeout=5)
    await queue.cancel(task_id)
    clock.advance(10)  # the heartbeat runs on the worker's clock
    await asyncio.wait_for(running, timeout=5)
    await worker.stop()
    assert hooks.calls == []


async def test_each_failure_and_retry_is_logged_with_its_task(
    queue: TaskQueue, worker: Worker, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="sitq")
    policy = RetryPolicy.fixed(0.5, max_attempts=2)
    task_id = await queue.with_options(retry=policy).enqueue(flaky, 9)
    await worker.run_until_idle()

    records = [
        r for r in caplog.records if r.name == "sitq.worker" and r.levelno >= logging.WARNING
    ]
    assert [r.levelno for r in records] == [logging.WARNING, logging.ERROR]
    for attempt, record in enumerate(records, start=1):
        message = record.getMessage()
        assert task_id in message and "flaky" in message and f"attempt {attempt}" in message
        assert f"ConnectionError: outage on attempt {attempt}" in message
        assert (record.task_id, record.task_name, record.attempt) == (task_id, "flaky", attempt)
        assert record.error_type == "ConnectionError"
    assert "retrying in 0.5s" in records[0].getMessage()


def _status_over_500(exc: BaseException) -> bool:
    # A student's bug: not every exception has a .status attribute.
    return exc.status > 500  # type: ignore[attr-defined]


async def test_a_retry_predicate_that_raises_fails_the_task_not_the_worker(
    queue: TaskQueue, worker: Worker
) -> None:
    """Given a retry_on predicate that itself raises, when a task fails, then the task is
    a dead letter with its own error (not stuck as running) and the worker goes on."""
    policy = RetryPolicy.fixed(1, max_attempts=3, retry_on=_status_over_500)
    task_id = await queue.with_options(retry=policy).enqueue(raise_it, ValueError("bad row"))
    other = await queue.enqueue(flaky, 0)
    await worker.run_until_idle()
    result = await queue.get_result(task_id, timeout=1)
    assert result is not None and result.is_failed() and result.error_type == "ValueError"
    assert result.attempts == 1
    assert (await queue.get_result(other, timeout=1)).value == "ok on attempt 1"


async def test_a_success_calls_its_hook_also_when_info_is_not_logged(
    backend: SQLiteBackend, queue: TaskQueue, clock: FakeClock, caplog: pytest.LogCaptureFixture
):
    """With INFO off (the default), the worker builds no record for a success but still
    calls the hook; with INFO on, the record is there too."""
    hooks = Recorder()
    worker = worker_for(backend, clock, hooks=hooks)
    for level, logged in ((logging.WARNING, False), (logging.INFO, True)):
        caplog.set_level(level, logger="sitq.worker")
        caplog.clear()
        hooks.calls.clear()
        task_id = await queue.enqueue(flaky, 0)
        await worker.run_until_idle()
        assert hooks.calls == [("success", 1, "ok on attempt 1")]
        succeeded = [r for r in caplog.records if "succeeded" in r.getMessage()]
        assert bool(succeeded) is logged
        assert all(r.task_id == task_id for r in succeeded)
    await worker.stop()
