"""The retry exercise checkers: a right answer passes, a wrong one gets "not yet" + a hint.

The "student answers" below are module-level, as a student's would be in a notebook cell;
each checker runs them through a real queue in virtual time, so these tests also show
that the exercises can be solved with sitq's public API.
"""

from __future__ import annotations

import random

import pytest
from teaching_asserts import assert_not_yet, assert_passed, stub

import sitq
from sitq import FakeClock, RetryPolicy, TaskQueue
from sitq.teaching import retries as r
from sitq.teaching.sandbox import Job, run_jobs, sandbox

# --- the clock a task sees ----------------------------------------------------------------

seen_started_at: list[float | None] = []


async def note_start_time() -> None:
    seen_started_at.append(sitq.current_task().started_at)


async def test_a_task_reads_its_start_time_on_the_queue_clock() -> None:
    seen_started_at.clear()
    run = await run_jobs([Job("later", note_start_time, delay=42.0)], None)
    assert seen_started_at == [pytest.approx(run.start + 42.0)]


# --- linear backoff -----------------------------------------------------------------------


def linear_delay(attempt: int, exc: BaseException | None) -> float:
    return 1.0 * attempt


@pytest.mark.parametrize(
    "policy",
    [RetryPolicy.linear(1.0, max_attempts=5), RetryPolicy.custom(linear_delay, max_attempts=5)],
)
async def test_linear_backoff_passes(policy: RetryPolicy) -> None:
    assert_passed(await r.check_linear_backoff(policy))
    assert_passed(await r.check_linear_backoff(lambda: policy))  # a function building it


async def test_linear_backoff_names_exponential_and_wrong_counts() -> None:
    exponential = await r.check_linear_backoff(RetryPolicy.exponential(1.0, max_attempts=5))
    assert_not_yet(exponential, "[1s, 2s, 4s, 8s]", "exponential")
    assert_not_yet(await r.check_linear_backoff(RetryPolicy.linear(1.0)), "3 time(s)")


async def test_a_stub_or_a_non_policy_is_not_yet() -> None:
    assert_not_yet(await r.check_linear_backoff(stub), "NotImplementedError")  # type: ignore[arg-type]
    assert_not_yet(await r.check_linear_backoff(lambda: 1.0), "got float")  # type: ignore[arg-type]
    assert_not_yet(await r.check_many_retries(stub, RetryPolicy.fixed(1)), "not filled in")
    assert_not_yet(await r.check_partition(stub, RetryPolicy.fixed(1)), "not filled in")
    dead = await r.check_dead_letters(stub, RetryPolicy.fixed(1, max_attempts=4), requeue_all)
    assert_not_yet(dead, "not filled in")


# --- jitter -------------------------------------------------------------------------------


def full_jitter(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0, min(20.0, 1.0 * 2 ** (attempt - 1)))


def uncapped_jitter(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0, 2.0 ** (attempt - 1))


def unseeded_jitter(attempt: int, rng: random.Random) -> float:
    return random.uniform(0, min(20.0, 2.0 ** (attempt - 1)))


def no_jitter(attempt: int, rng: random.Random) -> float:
    return min(20.0, 2.0 ** (attempt - 1))


def test_full_jitter_checker() -> None:
    assert_passed(r.check_full_jitter(full_jitter))
    assert_not_yet(r.check_full_jitter(uncapped_jitter), "attempt 6", "20s")
    assert_not_yet(r.check_full_jitter(unseeded_jitter), "same seed")
    assert_not_yet(r.check_full_jitter(no_jitter), "barely vary")
    assert_not_yet(r.check_full_jitter(stub), "NotImplementedError")


async def test_jitter_policy_checker() -> None:
    good = RetryPolicy.exponential_jitter(1.0, cap=20.0, max_attempts=5)
    assert_passed(await r.check_jitter_policy(good))
    lockstep = RetryPolicy.exponential(1.0, cap=20.0, max_attempts=5)
    assert_not_yet(await r.check_jitter_policy(lockstep), "lockstep")
    baked = random.Random(0)
    one_draw_per_task = RetryPolicy.custom(lambda k, e: full_jitter(k, baked), max_attempts=5)
    assert_not_yet(await r.check_jitter_policy(one_draw_per_task), "lockstep")
    too_slow = RetryPolicy.exponential_jitter(4.0, cap=20.0, max_attempts=5)
    assert_not_yet(await r.check_jitter_policy(too_slow), "above the ceiling")


# --- custom retry conditions --------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, r.HTTPError):
        return exc.status == 429 or exc.status >= 500
    return isinstance(exc, ConnectionError | TimeoutError)


async def test_error_conditions_checker() -> None:
    good = RetryPolicy.fixed(1.0, max_attempts=3, retry_on=is_transient)
    assert_passed(await r.check_error_conditions(good))
    by_class = RetryPolicy.fixed(1.0, max_attempts=3, retry_on=[ConnectionError, TimeoutError])
    assert_not_yet(await r.check_error_conditions(by_class), "HTTPError(503) ran 1x")
    retry_all = RetryPolicy.fixed(1.0, max_attempts=3)
    assert_not_yet(await r.check_error_conditions(retry_all), "ValueError ran 3x")


# --- many retries -------------------------------------------------------------------------


async def fails_seven_times() -> str:
    if sitq.current_task().attempt < 8:
        raise ConnectionError("not yet")
    return "finally"


async def works_at_once() -> str:
    return "too easy"


async def test_many_retries_checker() -> None:
    capped = RetryPolicy.exponential(1.0, cap=10.0, max_attempts=8)
    assert_passed(await r.check_many_retries(fails_seven_times, capped))
    short = RetryPolicy.exponential(1.0, cap=10.0, max_attempts=5)
    assert_not_yet(await r.check_many_retries(fails_seven_times, short), "after 5 attempt(s)")
    uncapped = RetryPolicy.exponential(1.0, max_attempts=8)
    assert_not_yet(await r.check_many_retries(fails_seven_times, uncapped), "127s")
    assert_not_yet(await r.check_many_retries(works_at_once, capped), "attempt 1")


# --- dead letters -------------------------------------------------------------------------


async def broken() -> None:
    raise ValueError("this record is corrupt")


async def hopeless() -> None:
    raise sitq.PermanentError("no such customer")


async def requeue_all(queue: TaskQueue) -> int:
    dead = await queue.dead_letters()
    for result in dead:
        await queue.requeue(result.task_id)
    return len(dead)


async def requeue_none(queue: TaskQueue) -> int:
    return 0


async def test_dead_letter_checker() -> None:
    four = RetryPolicy.fixed(5.0, max_attempts=4)
    assert_passed(await r.check_dead_letters(broken, four, requeue_all))
    assert_not_yet(await r.check_dead_letters(hopeless, four, requeue_all), "[1] attempt")
    assert_not_yet(await r.check_dead_letters(broken, four, requeue_none), "returned 0")
    assert_not_yet(await r.check_dead_letters(works_at_once, four, requeue_all), "3 of 3")


# --- network partition --------------------------------------------------------------------


async def call_api(down_from: float, down_until: float) -> str:
    if down_from <= sitq.current_task().started_at < down_until:
        raise ConnectionError("network unreachable")
    return "200 OK"


async def always_down(down_from: float, down_until: float) -> str:
    raise ConnectionError("network unreachable")


async def test_partition_checker() -> None:
    outlasts = RetryPolicy.exponential(1.0, max_attempts=8)
    assert_passed(await r.check_partition(call_api, outlasts))
    gives_up = RetryPolicy.exponential(1.0, max_attempts=5)
    assert_not_yet(await r.check_partition(call_api, gives_up), "gave up", "65s")
    hammers = RetryPolicy.fixed(1.0, max_attempts=100)
    assert_not_yet(await r.check_partition(call_api, hammers), "times")
    assert_not_yet(await r.check_partition(always_down, outlasts), "network was up")


async def test_partition_run_is_there_to_plot() -> None:
    run = await r.run_partition(call_api, RetryPolicy.exponential(1.0, max_attempts=8))
    assert [len(run.attempts_of(k)) for k in r.PARTITION_JOBS] == [1, 7, 7, 5, 1]
    assert all(res is not None and res.is_success() for res in run.results.values())


async def test_sandbox_gives_a_fresh_virtual_queue() -> None:
    async with sandbox() as box:
        assert isinstance(box.clock, FakeClock)
        assert await box.queue.history() == []


def not_filled_in(exc: BaseException) -> bool:
    raise NotImplementedError


def crashes_on_plain_errors(exc: BaseException) -> bool:
    return exc.status >= 500  # type: ignore[attr-defined]


async def test_stubs_and_bugs_in_policy_functions_are_caught_before_the_queue() -> None:
    stubbed = RetryPolicy.custom(lambda k, e: stub(), max_attempts=5)
    assert_not_yet(await r.check_linear_backoff(stubbed), "not filled in")
    predicate = RetryPolicy.fixed(1.0, max_attempts=3, retry_on=not_filled_in)
    assert_not_yet(await r.check_error_conditions(predicate), "not filled in")
    buggy = RetryPolicy.fixed(1.0, max_attempts=3, retry_on=crashes_on_plain_errors)
    assert_not_yet(await r.check_error_conditions(buggy), "AttributeError")
