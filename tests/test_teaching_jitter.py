"""The jitter checkers: right answers in several styles pass; tempting wrong ones do not.

Each wrong answer below is one students really write. A range check passed several of
them (waits of only 0 or the ceiling, waits bunched in the upper half); the checkers now
test the whole distribution of the waits, so these must get "not yet" and a hint that
names the mistake.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from teaching_asserts import assert_not_yet, assert_passed, stub

from sitq import RetryPolicy
from sitq.teaching import retries as r


def ceiling(attempt: int) -> float:
    return min(20.0, 1.0 * 2 ** (attempt - 1))


# --- 2a: the full-jitter delay, right in several styles --------------------------------


def full_jitter(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0, min(20.0, 1.0 * 2 ** (attempt - 1)))


def scaled_random(attempt: int, rng: random.Random) -> float:
    return rng.random() * ceiling(attempt)


def from_the_top(attempt: int, rng: random.Random) -> float:
    return ceiling(attempt) - rng.uniform(0, ceiling(attempt))


def fine_grid(attempt: int, rng: random.Random) -> float:
    return rng.randint(0, 1000) / 1000 * ceiling(attempt)


def numpy_float(attempt: int, rng: random.Random) -> float:
    return np.float32(rng.uniform(0, ceiling(attempt)))  # type: ignore[return-value]


@pytest.mark.parametrize(
    "answer", [full_jitter, scaled_random, from_the_top, fine_grid, numpy_float]
)
def test_right_full_jitter_passes(answer) -> None:
    assert_passed(r.check_full_jitter(answer))


# --- 2a: wrong full-jitter delays --------------------------------------------------------


def zero_or_ceiling(attempt: int, rng: random.Random) -> float:
    return rng.choice([0.0, ceiling(attempt)])


def upper_part(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0.45 * ceiling(attempt), ceiling(attempt))


def equal_jitter(attempt: int, rng: random.Random) -> float:
    return ceiling(attempt) / 2 + rng.uniform(0, ceiling(attempt) / 2)


def base_tenth(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0, min(20.0, 0.1 * 2 ** (attempt - 1)))


def uncapped(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0, 2.0 ** (attempt - 1))


def unseeded(attempt: int, rng: random.Random) -> float:
    return random.uniform(0, ceiling(attempt))


def no_jitter(attempt: int, rng: random.Random) -> float:
    return ceiling(attempt)


def capped_after_drawing(attempt: int, rng: random.Random) -> float:
    return min(20.0, rng.uniform(0, 2.0 ** (attempt - 1)))  # the cap cuts, it does not shrink


def linear_ceiling(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0, min(20.0, 1.0 * attempt))  # grows by 1 s: linear, not exponential


def jitter_on_top(attempt: int, rng: random.Random) -> float:
    return ceiling(attempt) + rng.uniform(0, 1)  # can exceed the ceiling and the cap


def off_by_one(attempt: int, rng: random.Random) -> float:
    return rng.uniform(0, min(20.0, 2.0**attempt))


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (zero_or_ceiling, ["attempt 1", "only the values [0.0, 1.0]", "rng.uniform(0, ceiling)"]),
        (upper_part, ["attempt 1", "none was below 0.45", '"equal" jitter']),
        (equal_jitter, ["none was below 0.5", '"equal" jitter']),
        (base_tenth, ["attempt 1", "none was above 0.0998s", "p < 1e-15", "base (1 s)"]),
        (uncapped, ["attempt 6", "20s", "min(20"]),
        (unseeded, ["same seed", "`rng` argument"]),
        (no_jitter, ["every one was 1s", "random"]),
        (capped_after_drawing, ["attempt 6", "spread evenly over [0, 20s]"]),
        (linear_ceiling, ["attempt 3", "none was above 3", "linear, not exponential"]),
        (jitter_on_top, ["attempt 1", "ran from 1", "between 0 and 1s"]),
        (off_by_one, ["attempt 1", "to 2s", "between 0 and 1s"]),
        (stub, ["not filled in"]),
        (lambda attempt, rng: None, ["returned None", "float"]),
        (lambda attempt, rng: rng.uniform(0, 1) / (attempt - 1), ["raised ZeroDivisionError"]),
    ],
)
def test_wrong_full_jitter_gets_a_hint(answer, words) -> None:
    feedback = r.check_full_jitter(answer)
    assert_not_yet(feedback, *words)
    if answer in (zero_or_ceiling, upper_part, equal_jitter, base_tenth):
        assert "Kolmogorov-Smirnov" in feedback.message


# --- 2b: the jitter policy ---------------------------------------------------------------


def drawn_by_the_module(attempt: int, exc: BaseException | None) -> float:
    """Drawn at each retry from the process's own generator (seeded by the test)."""
    return random.uniform(0, ceiling(attempt))


@pytest.mark.parametrize(
    "answer",
    [
        RetryPolicy.exponential_jitter(1.0, cap=20.0, max_attempts=5),
        RetryPolicy(5, "exponential_jitter", base=1, cap=20, jitter="full"),
        lambda: RetryPolicy.exponential_jitter(1.0, factor=2, cap=20.0, jitter="full"),
        RetryPolicy.custom(drawn_by_the_module, max_attempts=5),
    ],
    ids=["constructor", "dataclass", "function", "custom"],
)
async def test_right_jitter_policies_pass(answer) -> None:
    random.seed(0)
    assert_passed(await r.check_jitter_policy(answer))


def no_growth(attempt: int, exc: BaseException | None) -> float:
    return random.uniform(0, 0.9)


def first_wait_only(attempt: int, exc: BaseException | None) -> float:
    return random.uniform(0, 1.0) if attempt == 1 else 0.0


baked = random.Random(0)  # pickled with each task: every copy draws the same numbers


def cap_cuts_the_draw(attempt: int, exc: BaseException | None) -> float:
    return min(20.0, random.uniform(0, 2.0 ** (attempt - 1)))


def over_the_cap(attempt: int, exc: BaseException | None) -> float:
    return random.uniform(0, 2.0 ** (attempt - 1))  # no cap: fine for 4 retries, not after


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (RetryPolicy.custom(no_growth, max_attempts=5), ["before retry 2", "none was above 0.88"]),
        (
            RetryPolicy.exponential_jitter(1.0, cap=20.0, jitter="equal", max_attempts=5),
            ["before retry 1", "none was below 0.5", '"equal" jitter'],
        ),
        (
            RetryPolicy.exponential_jitter(0.1, cap=20.0, max_attempts=5),
            ["before retry 1", "none was above 0.0996s", "base (1 s)"],
        ),
        (RetryPolicy.custom(first_wait_only, max_attempts=5), ["retry 2", "every one was 0s"]),
        (RetryPolicy.exponential(1.0, cap=20.0, max_attempts=5), ["lockstep"]),
        (RetryPolicy.custom(lambda k, e: full_jitter(k, baked), max_attempts=5), ["lockstep"]),
        (RetryPolicy.exponential_jitter(4.0, cap=20.0, max_attempts=5), ["above the ceiling"]),
        (
            RetryPolicy.exponential_jitter(1.0, cap=20.0, jitter="decorrelated", max_attempts=5),
            ["above the ceiling of 1s"],
        ),
        (RetryPolicy.exponential_jitter(1.0, cap=20.0, max_attempts=3), ["[3] attempts"]),
        # the 20 s cap forgotten: the first 4 waits never reach it, later ones must
        (
            RetryPolicy.exponential_jitter(1.0, max_attempts=5),
            ["with 9 attempts instead of 5", "before retry 6", "above the ceiling of 20s", "cap"],
        ),
        (RetryPolicy.custom(over_the_cap, max_attempts=5), ["with 9 attempts", "retry 6"]),
        (
            RetryPolicy.custom(cap_cuts_the_draw, max_attempts=5),
            ["with 9 attempts", "before retry 6", "not spread evenly", "cap the exponential"],
        ),
        (
            RetryPolicy.custom(lambda k, e: None if k > 4 else over_the_cap(k, e), max_attempts=5),
            ["given max_attempts=9", "[5] attempts"],
        ),
        (stub, ["not filled in"]),
    ],
    ids=[
        "no-growth",
        "equal",
        "base-0.1",
        "first-only",
        "no-jitter",
        "baked-rng",
        "base-4",
        "decorrelated",
        "3-attempts",
        "no-cap",
        "custom-no-cap",
        "custom-cap-cuts",
        "gives-up-after-4",
        "stub",
    ],
)
async def test_wrong_jitter_policies_get_a_hint(answer, words) -> None:
    random.seed(0)
    assert_not_yet(await r.check_jitter_policy(answer), *words)
