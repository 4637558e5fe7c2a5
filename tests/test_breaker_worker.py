"""A circuit breaker attached to a worker: `Worker(breakers={"task name": breaker})`.

While the breaker is open, that task's due runs are deferred: put back in the queue for
when the breaker may admit a probe, without failing and without using an attempt. When
the recovery timeout has passed, one run goes through as a half-open probe; its outcome
closes or re-opens the breaker. Breaker and worker share one FakeClock, so every moment
below is exact virtual time.
"""

from __future__ import annotations

import random

import pytest

from sitq import (
    BreakerState,
    CircuitBreaker,
    FakeClock,
    RetryPolicy,
    SQLiteBackend,
    TaskQueue,
    TaskStatus,
    Worker,
    current_task,
)

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


async def call_service(up: bool) -> str:
    """Stands for a call to another service, which is either up or down."""
    if not up:
        raise ConnectionError("service down")
    return "served"


async def recovers_on_second_try() -> str:
    if current_task().attempt == 1:
        raise ConnectionError("service down")
    return "served"


async def unrelated() -> str:
    return "not guarded"


async def failing_task(task_id: int) -> None:
    """The seed's helper: a task that always fails."""
    raise ValueError(f"Intentional failure for task {task_id}")


@pytest.fixture
def breaker(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(
        failure_threshold=3, recovery_timeout=10, half_open_max_calls=1, clock=clock, name="svc"
    )


@pytest.fixture
async def guarded(backend: SQLiteBackend, clock: FakeClock, breaker: CircuitBreaker):
    worker = Worker(
        backend,
        clock=clock,
        rng=random.Random(0),
        worker_id="w1",
        breakers={
            "call_service": breaker,
            "recovers_on_second_try": breaker,
            "failing_task": breaker,
        },
    )
    yield worker
    await worker.stop()


async def trip(queue: TaskQueue, worker: Worker, breaker: CircuitBreaker) -> None:
    """Three failures in a row: the breaker opens."""
    await queue.enqueue_many([(call_service, (False,))] * 3)
    assert await worker.run_once() == 3
    assert breaker.state is OPEN


async def test_opens_after_n_failures_and_defers_without_using_an_attempt(
    queue: TaskQueue, guarded: Worker, breaker: CircuitBreaker, clock: FakeClock
):
    opened = clock.now()
    await trip(queue, guarded, breaker)

    task_id = await queue.enqueue(call_service, True)
    assert await guarded.run_once() == 1  # claimed, then deferred: it did not run

    info = await queue.get_task(task_id)
    assert (info.status, info.attempts, info.due_at) == (TaskStatus.SCHEDULED, 0, opened + 10)
    assert info.error is None
    assert await queue.history(task_id) == []
    assert await guarded.run_once() == 0  # nothing is due until the breaker may probe
    assert breaker.state is OPEN


async def test_half_open_probe_success_closes_the_breaker(
    queue: TaskQueue, guarded: Worker, breaker: CircuitBreaker, clock: FakeClock
):
    t0 = clock.now()
    await trip(queue, guarded, breaker)
    task_id = await queue.enqueue(call_service, True)
    await guarded.run_once()

    await guarded.run_until_idle()  # virtual time jumps to the recovery moment

    result = await queue.get_result(task_id)
    assert result is not None
    assert (result.status, result.value, result.attempts) == (TaskStatus.SUCCEEDED, "served", 1)
    [probe] = await queue.history(task_id)
    assert probe.started_at == t0 + 10
    assert breaker.state is CLOSED
    moves = [(t.at - t0, t.from_state, t.to_state) for t in breaker.transitions]
    assert moves == [(0, CLOSED, OPEN), (10, OPEN, HALF_OPEN), (10, HALF_OPEN, CLOSED)]
    assert [t.reason for t in breaker.transitions] == [
        "3 consecutive failures",
        "recovery timeout of 10s elapsed",
        "1 probe call(s) succeeded",
    ]
    assert {t.name for t in breaker.transitions} == {"svc"}


async def test_a_failed_probe_opens_the_breaker_again(
    queue: TaskQueue, guarded: Worker, breaker: CircuitBreaker, clock: FakeClock
):
    t0 = clock.now()
    await trip(queue, guarded, breaker)
    probe = await queue.enqueue(call_service, False)
    later = await queue.enqueue(call_service, True)
    await guarded.run_once()  # both deferred

    clock.advance(10)
    await guarded.run_once()  # the probe fails; `later` is deferred again

    assert await queue.status(probe) is TaskStatus.FAILED
    assert breaker.state is OPEN and breaker.opened_at == t0 + 10
    info = await queue.get_task(later)
    assert (info.status, info.attempts) == (TaskStatus.SCHEDULED, 0)

    await guarded.run_until_idle()
    assert await queue.status(later) is TaskStatus.SUCCEEDED
    assert [t.to_state for t in breaker.transitions] == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


async def test_every_deferred_run_happens_once_the_breaker_closes(
    queue: TaskQueue, guarded: Worker, breaker: CircuitBreaker
):
    await trip(queue, guarded, breaker)
    ids = await queue.enqueue_many([(call_service, (True,))] * 4)
    await guarded.run_until_idle()

    results = await queue.gather(ids)
    assert [(r.status, r.attempts) for r in results if r] == [(TaskStatus.SUCCEEDED, 1)] * 4
    assert [len(await queue.history(i)) for i in ids] == [1] * 4
    assert breaker.state is CLOSED


async def test_a_deferred_retry_keeps_its_retry_budget(
    queue: TaskQueue, guarded: Worker, breaker: CircuitBreaker, clock: FakeClock
):
    t0 = clock.now()
    policy = RetryPolicy.fixed(1.0, max_attempts=2)
    task_id = await queue.with_options(retry=policy).enqueue(recovers_on_second_try)
    await queue.enqueue_many([(call_service, (False,))] * 2)
    await guarded.run_once()  # three failures: the breaker opens; the retry is due at +1
    assert breaker.state is OPEN

    await guarded.run_until_idle()  # +1: deferred; +10: the probe, its second attempt

    history = await queue.history(task_id)
    assert [(a.attempt, a.outcome) for a in history] == [(1, "retrying"), (2, "succeeded")]
    assert history[1].started_at == t0 + 10
    assert await queue.status(task_id) is TaskStatus.SUCCEEDED


async def test_a_breaker_guards_only_its_own_task_names(
    queue: TaskQueue, guarded: Worker, breaker: CircuitBreaker
):
    await trip(queue, guarded, breaker)
    task_id = await queue.enqueue(unrelated)
    await guarded.run_once()
    assert await queue.status(task_id) is TaskStatus.SUCCEEDED
    assert breaker.state is OPEN


async def test_the_seed_breaker_scenario_skips_the_fourth_failing_task(
    queue: TaskQueue, guarded: Worker, breaker: CircuitBreaker
):
    """The seed sends failing_task 8..11 one by one; its breaker opens after 3 failures."""
    statuses = {}
    for i in range(8, 12):
        task_id = await queue.enqueue(failing_task, i)
        await guarded.run_once()
        statuses[i] = await queue.status(task_id)

    failed = TaskStatus.FAILED
    assert statuses == {8: failed, 9: failed, 10: failed, 11: TaskStatus.SCHEDULED}
    assert [(t.from_state, t.to_state) for t in breaker.transitions] == [(CLOSED, OPEN)]
