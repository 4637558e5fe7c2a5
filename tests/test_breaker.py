"""CircuitBreaker: a state machine driven by reported outcomes and a clock we move by hand."""

from __future__ import annotations

import math

import pytest

from sitq.policy.breaker import BreakerState, BreakerTransition, CircuitBreaker

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
T0 = 1000.0


class TinyClock:
    """Time that moves only when the test says so."""

    def __init__(self, start: float = T0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@pytest.fixture
def clock() -> TinyClock:
    return TinyClock()


def make(clock: TinyClock, **kwargs: object) -> CircuitBreaker:
    settings = {"failure_threshold": 3, "recovery_timeout": 10.0, **kwargs}
    return CircuitBreaker(clock=clock, name="api", **settings)  # type: ignore[arg-type]


def trip(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()


def test_a_new_breaker_is_closed_and_allows_calls(clock: TinyClock) -> None:
    breaker = make(clock)
    assert breaker.state is CLOSED and breaker.state == "closed"
    assert breaker.allow() and breaker.can_execute()
    assert breaker.failure_count == 0 and breaker.opened_at is None and breaker.retry_at() is None
    assert breaker.transitions == []


def test_opens_after_threshold_consecutive_failures(clock: TinyClock) -> None:
    # Given a breaker with threshold 3
    breaker = make(clock)
    # When two calls fail it stays closed
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CLOSED and breaker.failure_count == 2
    # When the third fails it opens
    breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.opened_at == T0
    assert breaker.retry_at() == T0 + 10


def test_a_success_resets_the_consecutive_count(clock: TinyClock) -> None:
    breaker = make(clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CLOSED and breaker.failure_count == 2


def test_denies_calls_while_open(clock: TinyClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(9.9)
    assert not breaker.allow()
    assert not breaker.can_execute()
    assert breaker.state is OPEN


def test_late_reports_while_open_do_not_move_the_recovery_time(clock: TinyClock) -> None:
    # Given an open breaker and calls admitted earlier that report afterwards
    breaker = make(clock)
    trip(breaker)
    clock.advance(5)
    breaker.record_failure()
    breaker.record_success()
    # Then it is still open and still due to probe at the original time
    assert breaker.state is OPEN and breaker.retry_at() == T0 + 10


def test_half_opens_after_the_recovery_timeout(clock: TinyClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(10)
    assert breaker.state is HALF_OPEN
    assert breaker.retry_at() is None


def test_half_open_admits_only_max_calls_probes(clock: TinyClock) -> None:
    # Given a breaker that allows two probes when half open
    breaker = make(clock, half_open_max_calls=2)
    trip(breaker)
    clock.advance(10)
    # When three calls ask / Then only two get through
    assert [breaker.allow(), breaker.allow(), breaker.allow()] == [True, True, False]


def test_closes_after_enough_probe_successes(clock: TinyClock) -> None:
    breaker = make(clock, half_open_max_calls=2)
    trip(breaker)
    clock.advance(10)
    breaker.allow()
    breaker.allow()
    breaker.record_success()
    assert breaker.state is HALF_OPEN  # one success is not enough with two probes
    breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.failure_count == 0 and breaker.opened_at is None
    assert breaker.allow()


def test_a_probe_failure_reopens_and_restarts_the_timer(clock: TinyClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(12)
    assert breaker.allow()  # the probe
    breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.opened_at == T0 + 12
    assert breaker.retry_at() == T0 + 22
    clock.advance(9)
    assert not breaker.allow()
    clock.advance(1)
    assert breaker.allow()


def test_probes_are_counted_afresh_on_each_half_open(clock: TinyClock) -> None:
    breaker = make(clock)
    trip(breaker)
    clock.advance(10)
    assert breaker.allow() and not breaker.allow()
    breaker.record_failure()
    clock.advance(10)
    assert breaker.allow()


def test_transitions_are_recorded_in_order_with_times_and_reasons(clock: TinyClock) -> None:
    # Given a full cycle: trip, recover, fail a probe, recover, succeed
    seen: list[BreakerTransition] = []
    breaker = make(clock, listener=seen.append)
    trip(breaker)
    clock.advance(10)
    breaker.allow()
    breaker.record_failure()
    clock.advance(15)
    breaker.allow()
    breaker.record_success()
    # Then every move is recorded, in order, with the time it happened
    moves = [(t.at - T0, t.from_state, t.to_state) for t in breaker.transitions]
    assert moves == [
        (0, CLOSED, OPEN),
        (10, OPEN, HALF_OPEN),
        (10, HALF_OPEN, OPEN),
        (25, OPEN, HALF_OPEN),
        (25, HALF_OPEN, CLOSED),
    ]
    assert all(t.name == "api" and t.reason for t in breaker.transitions)
    assert "3 consecutive failures" in breaker.transitions[0].reason
    # And the listener heard exactly the same transitions
    assert seen == breaker.transitions


def test_the_default_clock_is_the_wall_clock() -> None:
    breaker = CircuitBreaker(failure_threshold=1, recovery_timeout=60)
    breaker.record_failure()
    retry_at = breaker.retry_at()
    assert breaker.state is OPEN and retry_at is not None and retry_at > 1e9


def test_repr_shows_name_state_and_failures(clock: TinyClock) -> None:
    breaker = make(clock)
    breaker.record_failure()
    assert repr(breaker) == "CircuitBreaker(name='api', state='closed', failures=1/3)"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"failure_threshold": 2.5},
        {"failure_threshold": True},
        {"half_open_max_calls": 0},
        {"half_open_max_calls": "1"},
        {"recovery_timeout": -1},
        {"recovery_timeout": math.nan},
        {"recovery_timeout": math.inf},
        {"recovery_timeout": "10"},
    ],
    ids=str,
)
def test_invalid_settings_raise_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]


def test_a_clock_without_now_is_refused() -> None:
    with pytest.raises(TypeError, match="now"):
        CircuitBreaker(clock=object())  # type: ignore[arg-type]
