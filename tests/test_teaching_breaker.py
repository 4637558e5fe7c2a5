"""The breaker exercise's checker: right breakers in several styles pass; the tempting wrong
ones (never half-opens, never closes again, counts failures that are not in a row, lets
every call through while half open...) get "not yet" and a hint that names the mistake.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest
from teaching_asserts import assert_not_yet, assert_passed

from sitq import CircuitBreaker
from sitq.teaching import retries
from sitq.teaching.breaker import check_breaker

# --- right answers, in several styles ------------------------------------------------------


class Breaker:
    """The solution notebook's style: a state string, a count, the time it opened."""

    def __init__(self, failure_threshold: int, recovery_timeout: float, clock: Any) -> None:
        self.failure_threshold, self.recovery_timeout = failure_threshold, recovery_timeout
        self.clock = clock
        self.state, self.failures, self.opened_at = "closed", 0, 0.0

    def allow(self) -> bool:
        if self.state == "open" and self.clock.now() - self.opened_at >= self.recovery_timeout:
            self.state = "half_open"
            return True  # the probe
        return self.state == "closed"

    def record_success(self) -> None:
        self.state, self.failures = "closed", 0

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            self.state, self.opened_at = "open", self.clock.now()


class TimestampBreaker:
    """Another style: no state names, only when it opened and whether a probe is out."""

    def __init__(self, failure_threshold: int, recovery_timeout: float, clock: Any) -> None:
        self.limit, self.timeout, self.clock = failure_threshold, recovery_timeout, clock
        self.in_a_row = 0
        self.open_until: float | None = None  # None: closed
        self.probing = False

    def allow(self) -> bool:
        if self.open_until is None:
            return True
        if self.probing or self.clock.now() < self.open_until:
            return False
        self.probing = True
        return True

    def record_success(self) -> None:
        self.in_a_row, self.open_until, self.probing = 0, None, False

    def record_failure(self) -> None:
        self.in_a_row += 1
        if self.probing or self.in_a_row >= self.limit:
            self.open_until, self.probing = self.clock.now() + self.timeout, False


def sitqs_own(failure_threshold: int, recovery_timeout: float, clock: Any) -> CircuitBreaker:
    """A function returning a breaker works too: here sitq's own."""
    return CircuitBreaker(failure_threshold, recovery_timeout, clock=clock)


@pytest.mark.parametrize("answer", [Breaker, TimestampBreaker, sitqs_own])
def test_right_breakers_pass(answer) -> None:
    feedback = check_breaker(answer)
    assert_passed(feedback)
    assert "one probe" in feedback.message
    assert retries.check_breaker is check_breaker  # the notebook's one import has it


# --- wrong answers -----------------------------------------------------------------------------


class NeverHalfOpens(Breaker):
    def allow(self) -> bool:
        return self.state == "closed"


class NeverClosesAgain(Breaker):
    def record_success(self) -> None:
        if self.state == "closed":
            self.failures = 0


class CountsEveryFailure(Breaker):
    def record_success(self) -> None:
        self.state = "closed"  # the count is never reset


class OpensOneEarly(Breaker):
    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold - 1:
            self.state, self.opened_at = "open", self.clock.now()


class OpensOneLate(Breaker):
    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures > self.failure_threshold:
            self.state, self.opened_at = "open", self.clock.now()


class EveryCallProbes(Breaker):
    def allow(self) -> bool:
        if self.state == "open" and self.clock.now() - self.opened_at >= self.recovery_timeout:
            self.state = "half_open"
        return self.state != "open"  # half open lets everything through


class FailedProbeNeedsThreshold(Breaker):
    def record_success(self) -> None:
        self.state, self.failures = "closed", 0

    def record_failure(self) -> None:
        self.failures += 1
        if self.failures >= self.failure_threshold:
            self.failures = 0
            self.state, self.opened_at = "open", self.clock.now()


class KeepsTheFirstOpening(Breaker):
    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            if self.state == "closed":
                self.opened_at = self.clock.now()
            self.state = "open"  # a failed probe: opened_at stays where it was


class TimedFromTheFirstFailure(Breaker):
    def record_failure(self) -> None:
        self.failures += 1
        if self.failures == 1 or self.state == "half_open":
            self.opened_at = self.clock.now()
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            self.state = "open"


class WallClock(Breaker):
    def allow(self) -> bool:
        if self.state == "open" and time.time() - self.opened_at >= self.recovery_timeout:
            self.state = "half_open"
            return True
        return self.state == "closed"

    def record_failure(self) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            self.state, self.opened_at = "open", time.time()


class HardCoded(Breaker):
    def __init__(self, failure_threshold: int, recovery_timeout: float, clock: Any) -> None:
        super().__init__(3, 30.0, clock)


class SharedCount:
    """Its count lives on the class: every breaker adds to the same one."""

    failures: ClassVar[list[int]] = [0]

    def __init__(self, failure_threshold: int, recovery_timeout: float, clock: Any) -> None:
        self.inner = Breaker(failure_threshold, recovery_timeout, clock)

    def allow(self) -> bool:
        return self.failures[0] < self.inner.failure_threshold and self.inner.allow()

    def record_success(self) -> None:
        self.inner.record_success()

    def record_failure(self) -> None:
        self.failures[0] += 1
        self.inner.record_failure()


class StubBreaker:
    """The exercise as handed out: every method raises NotImplementedError."""

    def __init__(self, failure_threshold: int, recovery_timeout: float, clock: Any) -> None:
        self.clock = clock

    def allow(self) -> bool:
        raise NotImplementedError("your turn")

    def record_success(self) -> None:
        raise NotImplementedError("your turn")

    def record_failure(self) -> None:
        raise NotImplementedError("your turn")


class StringAnswers(Breaker):
    def allow(self) -> Any:
        return "yes" if super().allow() else ""


class OtherNames:
    def __init__(self, failure_threshold: int, recovery_timeout: float, clock: Any) -> None:
        pass

    def can_execute(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (
            NeverHalfOpens,
            [
                "'a probe that succeeds'",
                "30 s after opening it half-opens",
                "self.clock.now() - opened_at >= recovery_timeout",
            ],
        ),
        (
            NeverClosesAgain,
            ["'a probe that succeeds'", "the probe succeeded: closed again", "closes the breaker"],
        ),
        (
            CountsEveryFailure,
            [
                "'a success in between'",
                "the success set the count back to 0",
                "record_success() sets the count back to 0",
            ],
        ),
        (
            OpensOneEarly,
            ["'failures in a row'", "2 failures, allow() said False", "not before, not after"],
        ),
        (OpensOneLate, ["'failures in a row'", "3 failures in a row open it"]),
        (EveryCallProbes, ["'a probe that succeeds'", "half open admits one call", "ONE probe"]),
        (
            FailedProbeNeedsThreshold,
            ["'a probe that fails'", "a new probe", "opens the breaker again"],
        ),
        (KeepsTheFirstOpening, ["'a probe that fails'", "open again at once", "opened_at anew"]),
        (TimedFromTheFirstFailure, ["'failures spread out in time'", "not from the first failure"]),
        (WallClock, ["half-opens", "not time.time()"]),
        (HardCoded, ["failure_threshold=5", "recovery_timeout=12"]),
        (SharedCount, ["'a success in between'", "still closed"]),
        (StringAnswers, ["allow() returned 'yes'", "True (go ahead) or False"]),
        (OtherNames, ["no allow, record_success, record_failure() method"]),
        (StubBreaker, ["not filled in"]),
    ],
    ids=[
        "never-half-opens",
        "never-closes",
        "not-consecutive",
        "one-early",
        "one-late",
        "every-call-probes",
        "failed-probe-needs-threshold",
        "keeps-first-opening",
        "timed-from-first-failure",
        "wall-clock",
        "hard-coded",
        "shared-count",
        "string-answers",
        "other-names",
        "stub",
    ],
)
def test_wrong_breakers_get_a_hint(answer, words) -> None:
    assert_not_yet(check_breaker(answer), *words)
