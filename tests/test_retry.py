"""RetryPolicy: the delays each backoff produces, and which errors earn another attempt."""

from __future__ import annotations

import dataclasses
import math
import pickle
import random

import pytest

from sitq.policy.retry import (
    NO_RETRY,
    PermanentError,
    Retry,
    RetryPolicy,
    TaskTimeout,
    WorkerLost,
)
from sitq.policy.retry import TransientError as SitqTransientError

SEEDS = range(25)


# --- delays --------------------------------------------------------------------------


def test_exponential_doubles_from_base() -> None:
    # Given an exponential policy starting at 1s with factor 2 (5 attempts = 4 retries)
    policy = RetryPolicy.exponential(1, factor=2)
    # When previewing its retries / Then each delay doubles the last
    assert policy.preview() == [1, 2, 4, 8]


def test_exponential_cap_limits_every_later_delay() -> None:
    policy = RetryPolicy.exponential(1, cap=5, max_attempts=7)
    assert policy.preview() == [1, 2, 4, 5, 5, 5]


def test_exponential_with_a_huge_attempt_number_stays_at_the_cap() -> None:
    policy = RetryPolicy.exponential(1, cap=60, max_attempts=10_000)
    assert policy.delay(5_000) == 60


def test_linear_grows_by_base_by_default() -> None:
    assert RetryPolicy.linear(1, max_attempts=4).preview() == [1, 2, 3]


def test_linear_with_step_and_cap() -> None:
    policy = RetryPolicy.linear(2, step=3, cap=10, max_attempts=6)
    assert policy.preview() == [2, 5, 8, 10, 10]


def test_fixed_waits_the_same_every_time() -> None:
    assert RetryPolicy.fixed(2.5, max_attempts=4).preview() == [2.5, 2.5, 2.5]


def test_plain_constructor_means_run_once_with_no_delay() -> None:
    policy = RetryPolicy(max_attempts=1)
    assert policy == NO_RETRY
    assert policy.preview() == []
    assert policy.delay(1) == 0


def test_preview_never_shows_more_retries_than_the_budget() -> None:
    # Given a policy that allows 3 attempts (2 retries)
    policy = RetryPolicy.fixed(1, max_attempts=3)
    # When asking for 10 delays / Then only the 2 that would really happen come back
    assert policy.preview(10) == [1, 1]
    assert policy.preview(1) == [1]


@pytest.mark.parametrize("seed", SEEDS)
def test_full_jitter_stays_between_zero_and_the_exponential(seed: int) -> None:
    policy = RetryPolicy.exponential_jitter(1, cap=20, jitter="full", max_attempts=8)
    ceilings = RetryPolicy.exponential(1, cap=20, max_attempts=8).preview()
    for delay, ceiling in zip(policy.preview(seed=seed), ceilings, strict=True):
        assert 0 <= delay <= ceiling


@pytest.mark.parametrize("seed", SEEDS)
def test_equal_jitter_stays_in_the_upper_half(seed: int) -> None:
    policy = RetryPolicy.exponential_jitter(1, cap=20, jitter="equal", max_attempts=8)
    ceilings = RetryPolicy.exponential(1, cap=20, max_attempts=8).preview()
    for delay, ceiling in zip(policy.preview(seed=seed), ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


@pytest.mark.parametrize("seed", SEEDS)
def test_decorrelated_jitter_grows_from_the_previous_delay(seed: int) -> None:
    base, cap = 1.0, 30.0
    policy = RetryPolicy.exponential_jitter(base, cap=cap, jitter="decorrelated", max_attempts=8)
    previous = base  # the first retry grows from base
    for delay in policy.preview(seed=seed):
        assert base <= delay <= min(cap, 3 * previous)
        previous = delay


def test_decorrelated_jitter_uses_the_previous_argument() -> None:
    policy = RetryPolicy.exponential_jitter(1, cap=1000, jitter="decorrelated")
    delays = [policy.delay(2, rng=random.Random(s), previous=100) for s in SEEDS]
    assert all(1 <= d <= 300 for d in delays)
    assert max(delays) > 3  # not stuck in the first-retry band [1, 3]


@pytest.mark.parametrize("jitter", ["full", "equal", "decorrelated"])
def test_same_seed_same_preview_different_seeds_differ(jitter: str) -> None:
    policy = RetryPolicy.exponential_jitter(1, cap=60, jitter=jitter)
    assert policy.preview(seed=7) == policy.preview(seed=7)
    assert policy.preview(seed=7) != policy.preview(seed=8)


def test_jitter_without_an_rng_still_stays_in_band() -> None:
    policy = RetryPolicy.exponential_jitter(2, jitter="full")
    assert all(0 <= policy.delay(3) <= 8 for _ in range(50))


def test_custom_function_chooses_the_delay_and_can_give_up() -> None:
    # Given a rule: wait attempt * 10s, but give up on ValueError
    def rule(attempt: int, exc: BaseException | None) -> float | None:
        return None if isinstance(exc, ValueError) else attempt * 10.0

    policy = RetryPolicy.custom(rule, max_attempts=4)
    # Then its delays follow the rule, and None means "give up"
    assert policy.preview() == [10, 20, 30]
    assert policy.next_delay(1, OSError("flaky")) == 10
    assert policy.next_delay(1, ValueError("bad input")) is None


def test_custom_function_returning_a_bad_delay_is_reported() -> None:
    policy = RetryPolicy.custom(lambda attempt, exc: -1)
    with pytest.raises(ValueError, match="custom retry function"):
        policy.delay(1)


@pytest.mark.parametrize("attempt", [0, -1, 1.5, True])
def test_attempt_numbers_are_one_based_ints(attempt: object) -> None:
    with pytest.raises(ValueError, match="1-based"):
        RetryPolicy.fixed(1).delay(attempt)  # type: ignore[arg-type]


# --- validation ----------------------------------------------------------------------

INVALID = {
    "zero attempts": lambda: RetryPolicy(max_attempts=0),
    "float attempts": lambda: RetryPolicy.fixed(1, max_attempts=2.5),
    "bool attempts": lambda: RetryPolicy.fixed(1, max_attempts=True),
    "negative fixed": lambda: RetryPolicy.fixed(-1),
    "nan fixed": lambda: RetryPolicy.fixed(math.nan),
    "inf fixed": lambda: RetryPolicy.fixed(math.inf),
    "text delay": lambda: RetryPolicy.fixed("1"),
    "negative linear base": lambda: RetryPolicy.linear(-1),
    "negative step": lambda: RetryPolicy.linear(1, step=-1),
    "nan step": lambda: RetryPolicy.linear(1, step=math.nan),
    "linear cap below base": lambda: RetryPolicy.linear(5, cap=1),
    "negative exp base": lambda: RetryPolicy.exponential(-1),
    "nan exp base": lambda: RetryPolicy.exponential(math.nan),
    "inf cap": lambda: RetryPolicy.exponential(1, cap=math.inf),
    "nan cap": lambda: RetryPolicy.exponential(1, cap=math.nan),
    "cap below base": lambda: RetryPolicy.exponential(10, cap=5),
    "factor below 1": lambda: RetryPolicy.exponential(1, factor=0.5),
    "nan factor": lambda: RetryPolicy.exponential(1, factor=math.nan),
    "inf factor": lambda: RetryPolicy.exponential(1, factor=math.inf),
    "unknown jitter": lambda: RetryPolicy.exponential_jitter(1, jitter="random"),
    "jitter cap below base": lambda: RetryPolicy.exponential_jitter(3, cap=2),
    "unknown backoff": lambda: RetryPolicy(max_attempts=2, backoff="fibonacci"),
    "negative Retry delay": lambda: Retry(delay=-1),
    "nan Retry delay": lambda: Retry(delay=math.nan),
    "inf Retry delay": lambda: Retry(delay=math.inf),
}


@pytest.mark.parametrize("make", INVALID.values(), ids=INVALID.keys())
def test_invalid_settings_raise_value_error(make) -> None:
    with pytest.raises(ValueError):
        make()


def test_error_messages_name_the_problem_and_the_fix() -> None:
    with pytest.raises(ValueError, match="jitter must be one of full, equal, decorrelated"):
        RetryPolicy.exponential_jitter(1, jitter="random")
    with pytest.raises(ValueError, match=r"max_attempts must be an int >= 1.*got 0"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="raise cap or lower base"):
        RetryPolicy.exponential(10, cap=5)


@pytest.mark.parametrize("spec", [42, [ValueError, 3.5], int, object()])
def test_retry_on_of_the_wrong_type_raises_type_error(spec: object) -> None:
    with pytest.raises(TypeError, match="retry_on"):
        RetryPolicy.fixed(1, retry_on=spec)
    with pytest.raises(TypeError, match="give_up_on"):
        RetryPolicy.fixed(1, give_up_on=spec)


def test_custom_needs_a_callable() -> None:
    with pytest.raises(TypeError, match="custom"):
        RetryPolicy.custom(3)  # type: ignore[arg-type]


# --- classification ------------------------------------------------------------------


class TransientError(Exception):
    """A user's own class, as in the tutorial: sitq's name, but not a subclass of it."""


class FlakyNetwork(TransientError):
    pass


def test_any_exception_is_retried_when_no_list_is_given() -> None:
    policy = RetryPolicy.fixed(1, max_attempts=3)
    assert policy.should_retry(ValueError("x"), 1)
    assert not policy.should_retry(KeyboardInterrupt(), 1)


def test_retry_on_by_type_matches_subclasses_only() -> None:
    policy = RetryPolicy.fixed(1, retry_on=(ConnectionError, TimeoutError))
    assert policy.should_retry(ConnectionResetError(), 1)
    assert policy.should_retry(TimeoutError(), 1)
    assert not policy.should_retry(ValueError(), 1)


def test_retry_on_by_name_matches_a_user_class_that_does_not_subclass_sitq() -> None:
    # Given a policy that retries errors *named* TransientError
    policy = RetryPolicy.fixed(1, retry_on="TransientError")
    # Then the user's own class, its subclasses and sitq's class all match by name
    assert policy.should_retry(TransientError("glitch"), 1)
    assert policy.should_retry(FlakyNetwork("glitch"), 1)
    assert not issubclass(TransientError, SitqTransientError)
    assert policy.should_retry(SitqTransientError("glitch"), 1)
    assert not policy.should_retry(ValueError("bad"), 1)


def test_retry_on_accepts_a_list_of_names_and_dotted_names() -> None:
    policy = RetryPolicy.fixed(1, retry_on=["KeyError", f"{__name__}.FlakyNetwork"])
    assert policy.should_retry(KeyError("k"), 1)
    assert policy.should_retry(FlakyNetwork(), 1)
    assert not policy.should_retry(TransientError(), 1)


def test_retry_on_by_predicate() -> None:
    policy = RetryPolicy.fixed(1, retry_on=lambda exc: "503" in str(exc))
    assert policy.should_retry(RuntimeError("HTTP 503"), 1)
    assert not policy.should_retry(RuntimeError("HTTP 404"), 1)


def test_retry_on_mixes_types_names_and_predicates() -> None:
    policy = RetryPolicy.fixed(1, retry_on=[OSError, "KeyError", lambda e: "again" in str(e)])
    assert policy.should_retry(OSError(), 1)
    assert policy.should_retry(KeyError(), 1)
    assert policy.should_retry(ValueError("try again"), 1)
    assert not policy.should_retry(ValueError("no"), 1)


def test_give_up_on_beats_retry_on() -> None:
    # Given an error that matches both lists
    policy = RetryPolicy.fixed(1, retry_on=OSError, give_up_on=[FileNotFoundError])
    # Then giving up wins
    assert not policy.should_retry(FileNotFoundError(), 1)
    assert policy.should_retry(ConnectionError(), 1)


def test_give_up_on_alone_retries_everything_else() -> None:
    policy = RetryPolicy.fixed(1, give_up_on="ValueError")
    assert not policy.should_retry(ValueError(), 1)
    assert policy.should_retry(KeyError(), 1)


def test_permanent_error_is_never_retried_even_if_listed() -> None:
    policy = RetryPolicy.fixed(1, max_attempts=10, retry_on=Exception)
    assert not policy.should_retry(PermanentError("bad input"), 1)
    assert policy.next_delay(1, PermanentError("bad input")) is None


def test_retry_is_always_retried_within_budget_and_its_delay_wins() -> None:
    # Given a policy that would neither retry this kind of error nor wait 7s
    policy = RetryPolicy.fixed(1, max_attempts=3, retry_on=KeyError, give_up_on=Retry)
    # When a task raises Retry(delay=7) / Then it is retried after 7s
    assert policy.should_retry(Retry(delay=7), 1)
    assert policy.next_delay(1, Retry(delay=7)) == 7
    # And Retry() with no delay uses the policy's own delay
    assert policy.next_delay(2, Retry()) == 1
    # But not once the budget is spent
    assert not policy.should_retry(Retry(delay=7), 3)
    assert policy.next_delay(3, Retry(delay=7)) is None


def test_budget_exhausted_gives_up() -> None:
    policy = RetryPolicy.exponential(1, max_attempts=3)
    assert policy.next_delay(1, OSError()) == 1
    assert policy.next_delay(2, OSError()) == 2
    assert not policy.should_retry(OSError(), 3)
    assert policy.next_delay(3, OSError()) is None


@pytest.mark.parametrize(
    "error", [ValueError(), SitqTransientError(), Retry(delay=1), WorkerLost(), TaskTimeout(5)]
)
def test_no_retry_never_retries(error: Exception) -> None:
    assert NO_RETRY.max_attempts == 1
    assert not NO_RETRY.should_retry(error, 1)
    assert NO_RETRY.next_delay(1, error, random.Random(0)) is None


def test_next_delay_threads_rng_and_previous_into_jitter() -> None:
    policy = RetryPolicy.exponential_jitter(1, cap=100, jitter="decorrelated")
    first = policy.next_delay(1, OSError(), random.Random(3))
    again = policy.next_delay(1, OSError(), random.Random(3))
    assert first == again
    later = policy.next_delay(2, OSError(), random.Random(3), previous=first)
    assert later is not None and 1 <= later <= 3 * max(first or 1, 1)


# --- the exceptions and the policy as values -----------------------------------------


def test_retry_carries_delay_and_message() -> None:
    assert Retry(delay=5).delay == 5.0
    assert Retry().delay is None
    assert str(Retry(2, "rate limited")) == "rate limited"
    assert "5s" in str(Retry(delay=5))


def test_task_timeout_carries_its_limit() -> None:
    assert TaskTimeout(30).limit == 30
    assert "30s" in str(TaskTimeout(30))
    assert str(TaskTimeout(30, "too slow")) == "too slow"
    error = TaskTimeout("task exceeded its time limit of 2s")  # how the executor builds it
    assert error.limit is None and str(error).endswith("2s")


@pytest.mark.parametrize(
    "error", [Retry(3, "later"), Retry(), TaskTimeout(4), WorkerLost("w1 died")]
)
def test_errors_survive_pickling(error: Exception) -> None:
    # A task in a process pool raises them in another process, so they must cross over.
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert getattr(copy, "delay", None) == getattr(error, "delay", None)
    assert getattr(copy, "limit", None) == getattr(error, "limit", None)


def test_policies_are_immutable_comparable_and_picklable() -> None:
    policy = RetryPolicy.exponential(1, cap=30, retry_on=["OSError", KeyError])
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 10  # type: ignore[misc]
    assert policy == RetryPolicy.exponential(1, cap=30, retry_on=("OSError", KeyError))
    assert hash(policy) == hash(RetryPolicy.exponential(1, cap=30, retry_on=["OSError", KeyError]))
    copy = pickle.loads(pickle.dumps(policy))
    assert copy == policy and copy.should_retry(OSError(), 1)


def test_repr_reads_like_the_call_that_built_it() -> None:
    assert repr(NO_RETRY) == "RetryPolicy(max_attempts=1)"
    assert repr(RetryPolicy.exponential(1, cap=30)) == (
        "RetryPolicy.exponential(1.0, factor=2.0, cap=30.0, max_attempts=5)"
    )
    assert repr(RetryPolicy.linear(1, retry_on="OSError")) == (
        "RetryPolicy.linear(1.0, step=1.0, max_attempts=3, retry_on='OSError')"
    )
    assert "jitter='equal'" in repr(RetryPolicy.exponential_jitter(1, jitter="equal"))
