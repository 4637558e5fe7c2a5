"""The retry exercise checkers: a right answer passes, a wrong one gets "not yet" + a hint.

The "student answers" below are module-level, as a student's would be in a notebook cell;
each checker runs them through a real queue in virtual time, so these tests also show
that the exercises can be solved with sitq's public API.
"""

from __future__ import annotations

import time

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
    double_step = RetryPolicy.linear(2.0, max_attempts=5)
    assert_not_yet(await r.check_linear_backoff(double_step), "[2s, 4s, 6s, 8s]", "1.0 * attempt")
    assert_not_yet(await r.check_linear_backoff(RetryPolicy.fixed(1.0, max_attempts=5)), "[1s, 1s")


def four_waits_table(attempt: int, exc: BaseException | None) -> float:
    return [1.0, 2.0, 3.0, 4.0][attempt - 1]  # right for the 5 attempts asked, and no further


def capped_at_four(attempt: int, exc: BaseException | None) -> float:
    return min(attempt, 4.0)


def from_zero(attempt: int, exc: BaseException | None) -> float:
    return 1.0 * (attempt - 1)  # off by one: attempts are numbered from 1


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        (RetryPolicy.custom(four_waits_table, max_attempts=5), ["with 9 attempts", "the rule"]),
        (
            RetryPolicy.custom(capped_at_four, max_attempts=5),
            ["with 9 attempts", "[1s, 2s, 3s, 4s, 4s, 4s, 4s, 4s]", "stops growing", "no cap"],
        ),
        (RetryPolicy.linear(1.0, cap=4.0, max_attempts=5), ["stops growing after the fourth"]),
        (RetryPolicy.custom(from_zero, max_attempts=5), ["[0s, 1s, 2s, 3s]"]),
        (RetryPolicy.linear(1.0, max_attempts=4), ["ran 4 time(s)", "5 attempts = 4 retries"]),
        (RetryPolicy.linear(1.0, max_attempts=6), ["ran 6 time(s)"]),
    ],
    ids=["table", "capped-at-4", "linear-cap-4", "from-zero", "4-attempts", "6-attempts"],
)
async def test_linear_backoff_that_stops_growing_or_is_off_by_one(policy, words) -> None:
    assert_not_yet(await r.check_linear_backoff(policy), *words)


async def test_a_stub_or_a_non_policy_is_not_yet() -> None:
    assert_not_yet(await r.check_linear_backoff(stub), "NotImplementedError")  # type: ignore[arg-type]
    assert_not_yet(await r.check_linear_backoff(lambda: 1.0), "got float")  # type: ignore[arg-type]
    stubbed_delay = RetryPolicy.custom(lambda k, e: stub(), max_attempts=5)
    assert_not_yet(await r.check_linear_backoff(stubbed_delay), "not filled in")
    assert_not_yet(await r.check_many_retries(stub, RetryPolicy.fixed(1)), "not filled in")
    assert_not_yet(await r.check_partition(stub, RetryPolicy.fixed(1)), "not filled in")
    dead = await r.check_dead_letters(stub, RetryPolicy.fixed(1, max_attempts=4), requeue_all)
    assert_not_yet(dead, "not filled in")


# --- many retries -------------------------------------------------------------------------


async def fails_seven_times() -> str:
    if sitq.current_task().attempt < 8:
        raise ConnectionError("not yet")
    return "finally"


async def works_at_once() -> str:
    return "too easy"


async def fails_until_the_eighth() -> str:
    attempt = sitq.current_task().attempt
    if attempt <= 7:
        raise ConnectionError(f"still down (attempt {attempt})")
    return "finally"


async def test_many_retries_checker() -> None:
    capped = RetryPolicy.exponential(1.0, cap=10.0, max_attempts=8)
    assert_passed(await r.check_many_retries(fails_seven_times, capped))
    steady = lambda: RetryPolicy.fixed(5.0, max_attempts=8)  # noqa: E731  # 35 s in all
    assert_passed(await r.check_many_retries(fails_until_the_eighth, steady))
    short = RetryPolicy.exponential(1.0, cap=10.0, max_attempts=5)
    assert_not_yet(await r.check_many_retries(fails_seven_times, short), "after 5 attempt(s)")
    uncapped = RetryPolicy.exponential(1.0, max_attempts=8)
    assert_not_yet(await r.check_many_retries(fails_seven_times, uncapped), "127s")
    assert_not_yet(await r.check_many_retries(works_at_once, capped), "attempt 1")


async def fails_eight_times() -> str:
    if sitq.current_task().attempt <= 8:  # off by one: the 8th attempt fails too
        raise ConnectionError("not yet")
    return "finally"


@pytest.mark.parametrize(
    ("task", "policy", "words"),
    [
        # "keep the waits short": 8 calls to a dead service within 0.13 s is hammering it
        (
            fails_seven_times,
            RetryPolicy.exponential(0.001, max_attempts=8),
            ["within 0.13s", "hammering", "at least 7 s"],
        ),
        (fails_seven_times, RetryPolicy.fixed(0.0, max_attempts=8), ["within 0s", "hammering"]),
        (fails_seven_times, RetryPolicy.fixed(0.5, max_attempts=8), ["within 3.5s"]),
        (
            fails_eight_times,
            RetryPolicy.exponential(1.0, cap=10.0, max_attempts=8),
            ["failed on all 8 attempts", "attempt < 8", "not while attempt <= 8"],
        ),
        (
            fails_eight_times,
            RetryPolicy.exponential(1.0, cap=10.0, max_attempts=10),
            ["needed 9 attempts", "attempt < 8"],
        ),
        (
            fails_seven_times,
            RetryPolicy.exponential(1.0, cap=10.0, max_attempts=7),
            ["gave up after 7", "first included"],
        ),
    ],
    ids=["1ms-backoff", "no-wait", "half-second", "task-off-by-one", "task-9th", "7-attempts"],
)
async def test_many_retries_wrong_answers(task, policy, words) -> None:
    assert_not_yet(await r.check_many_retries(task, policy), *words)


async def test_many_retries_right_answers_in_other_styles() -> None:
    steady = RetryPolicy.fixed(1.0, max_attempts=8)  # 7 s: the least the checker accepts
    assert_passed(await r.check_many_retries(fails_seven_times, steady))
    linear = RetryPolicy.linear(1.0, max_attempts=10)  # 28 s; attempts 9, 10 unused
    assert_passed(await r.check_many_retries(fails_until_the_eighth, linear))
    jittered = RetryPolicy.exponential_jitter(1.0, cap=10.0, max_attempts=8)
    assert_passed(await r.check_many_retries(fails_seven_times, jittered))


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


async def unreachable() -> None:
    raise ConnectionError("host old-api.example.com not found")


async def requeue_each(queue: TaskQueue) -> int:
    ids = [result.task_id for result in await queue.dead_letters()]
    for task_id in ids:
        await queue.requeue(task_id)
    return len(ids)


async def test_dead_letter_checker() -> None:
    four = RetryPolicy.fixed(5.0, max_attempts=4)
    assert_passed(await r.check_dead_letters(broken, four, requeue_all))
    doubling = lambda: RetryPolicy.exponential(1.0, max_attempts=4)  # noqa: E731
    assert_passed(await r.check_dead_letters(unreachable, doubling, requeue_each))
    assert_not_yet(await r.check_dead_letters(hopeless, four, requeue_all), "[1] attempt")
    assert_not_yet(await r.check_dead_letters(broken, four, requeue_none), "returned 0")
    assert_not_yet(await r.check_dead_letters(works_at_once, four, requeue_all), "3 of 3")


# --- network partition --------------------------------------------------------------------


async def call_api(down_from: float, down_until: float) -> str:
    if down_from <= sitq.current_task().started_at < down_until:
        raise ConnectionError("network unreachable")
    return "200 OK"


async def call_api_early_return(down_from: float, down_until: float) -> str:
    started = sitq.current_task().started_at
    if started < down_from or started >= down_until:
        return "200 OK"
    raise ConnectionError(f"network unreachable at {started}")


@pytest.mark.parametrize("task", [call_api, call_api_early_return])
@pytest.mark.parametrize(
    "policy",
    [RetryPolicy.exponential(1.0, max_attempts=8), RetryPolicy.linear(2.0, max_attempts=10)],
    ids=["doubling", "linear"],
)
async def test_right_partition_answers_pass(task, policy) -> None:
    assert_passed(await r.check_partition(task, policy))


async def always_ok(down_from: float, down_until: float) -> str:
    return "200 OK"


async def fails_first_time(down_from: float, down_until: float) -> str:
    if sitq.current_task().attempt == 1:
        raise ConnectionError("network unreachable")
    return "200 OK"


async def on_the_wall_clock(down_from: float, down_until: float) -> str:
    if down_from <= time.time() < down_until:  # the real clock: never inside the window
        raise ConnectionError("network unreachable")
    return "200 OK"


async def inverted(down_from: float, down_until: float) -> str:
    if not down_from <= sitq.current_task().started_at < down_until:
        raise ConnectionError("network unreachable")
    return "200 OK"


async def window_reversed(down_from: float, down_until: float) -> str:
    if down_until <= sitq.current_task().started_at < down_from:  # never true
        raise ConnectionError("network unreachable")
    return "200 OK"


async def times_out(down_from: float, down_until: float) -> str:
    if down_from <= sitq.current_task().started_at < down_until:
        raise TimeoutError("no answer")
    return "200 OK"


async def always_down(down_from: float, down_until: float) -> str:
    raise ConnectionError("network unreachable")


OUTLASTS = RetryPolicy.exponential(1.0, max_attempts=8)
IGNORED = ["early job's attempt at t=10s succeeded while the network was down", "ignores"]


@pytest.mark.parametrize(
    ("task", "policy", "words"),
    [
        (always_ok, OUTLASTS, IGNORED),
        (always_ok, RetryPolicy(), IGNORED),  # no retries at all
        (on_the_wall_clock, OUTLASTS, IGNORED),
        (
            fails_first_time,
            OUTLASTS,
            ["before job's attempt at t=0s failed while the network was up"],
        ),
        (inverted, OUTLASTS, ["before job", "failed while the network was up"]),
        (window_reversed, OUTLASTS, IGNORED),
        (always_down, OUTLASTS, ["failed while the network was up"]),
        (times_out, OUTLASTS, ["TimeoutError, not ConnectionError"]),
        (call_api, RetryPolicy.exponential(1.0, max_attempts=5), ["gave up", "65s"]),
        (call_api, RetryPolicy(), ["gave up"]),
        (call_api, RetryPolicy.fixed(1.0, max_attempts=100), ["called the dead network"]),
        (stub, OUTLASTS, ["not filled in"]),
        (call_api, stub, ["not filled in"]),
    ],
    ids=[
        "ignores-with-retries",
        "ignores-without-retries",
        "wall-clock",
        "fails-first-attempt",
        "inverted",
        "window-reversed",
        "always-down",
        "wrong-error",
        "gives-up",
        "no-retries",
        "hammers",
        "task-stub",
        "policy-stub",
    ],
)
async def test_wrong_partition_answers_get_a_hint(task, policy, words) -> None:
    assert_not_yet(await r.check_partition(task, policy), *words)


async def test_partition_run_is_there_to_plot() -> None:
    run = await r.run_partition(call_api, RetryPolicy.exponential(1.0, max_attempts=8))
    assert [len(run.attempts_of(k)) for k in r.PARTITION_JOBS] == [1, 7, 7, 5, 1]
    assert all(res is not None and res.is_success() for res in run.results.values())


async def test_sandbox_gives_a_fresh_virtual_queue() -> None:
    async with sandbox() as box:
        assert isinstance(box.clock, FakeClock)
        assert await box.queue.history() == []
