"""A circuit breaker: stop calling something that keeps failing, then test it gently.

Retrying helps with a glitch; against a service that is down, every retry only adds load.
A breaker counts consecutive failures and, at a threshold, *opens*: calls are refused at
once for `recovery_timeout` seconds. Then it goes *half open* and lets a few probe calls
through. If they succeed it *closes* (back to normal); if one fails it opens again.

    CLOSED --N failures--> OPEN --recovery_timeout--> HALF_OPEN --probes succeed--> CLOSED
                             ^                            |
                             +-------a probe fails--------+

It is a pure state machine: it never sleeps and never calls the protected code itself.
You ask `allow()` before a call and report `record_success()` / `record_failure()` after.
Time comes from an injected clock (any object with `now()`), so a test can move time by
hand, and every transition is kept in `transitions` for printing and plotting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class BreakerState(StrEnum):
    """The three states; the value is what tables and plots show."""

    CLOSED = "closed"  # normal: every call goes through
    OPEN = "open"  # tripped: every call is refused until the recovery timeout
    HALF_OPEN = "half_open"  # probing: a few calls go through to test the water


@dataclass(frozen=True)
class BreakerTransition:
    """One change of state: when, which breaker, from what, to what, and why."""

    at: float
    name: str
    from_state: BreakerState
    to_state: BreakerState
    reason: str


class _Clock(Protocol):
    def now(self) -> float: ...


class _WallClock:
    """The default clock: real time. (sitq.clock has the full-featured ones.)"""

    def now(self) -> float:
        return time.time()


class CircuitBreaker:
    """Refuse calls after `failure_threshold` consecutive failures; probe again later.

    recovery_timeout: seconds an open breaker refuses calls before it half-opens.
    half_open_max_calls: probes admitted while half open; that many successes close it.
    clock: anything with `now() -> float` (default: the wall clock). listener: called with
    each BreakerTransition as it happens. Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        failure_threshold: int = 3,
        recovery_timeout: float = 10.0,
        half_open_max_calls: int = 1,
        *,
        clock: _Clock | None = None,
        name: str = "breaker",
        listener: Callable[[BreakerTransition], object] | None = None,
    ) -> None:
        _check_count("failure_threshold", failure_threshold)
        _check_count("half_open_max_calls", half_open_max_calls)
        if not _is_seconds(recovery_timeout):
            raise ValueError(
                "recovery_timeout must be a finite number of seconds >= 0 (e.g. 10.0); "
                f"got {recovery_timeout!r}"
            )
        if clock is not None and not callable(getattr(clock, "now", None)):
            raise TypeError(f"clock must have a now() method returning seconds; got {clock!r}")
        self.failure_threshold = failure_threshold
        self.recovery_timeout: float = float(recovery_timeout)
        self.half_open_max_calls = half_open_max_calls
        self.clock: _Clock = clock or _WallClock()
        self.name = name
        self.listener = listener
        self.transitions: list[BreakerTransition] = []
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at: float | None = None
        self._probes_admitted = 0
        self._probe_successes = 0

    # --- what it looks like now ------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state. An open breaker whose timeout has passed reads HALF_OPEN:
        the move happens (and is recorded) the first time anyone looks."""
        self._half_open_if_due()
        return self._state

    @property
    def failure_count(self) -> int:
        """Consecutive failures recorded since the last success."""
        return self._failures

    @property
    def opened_at(self) -> float | None:
        """When the breaker last opened; None unless it is open or half open."""
        return self._opened_at

    def retry_at(self) -> float | None:
        """When an open breaker will admit a probe; None if it is not open."""
        if self.state is not BreakerState.OPEN:
            return None
        assert self._opened_at is not None
        return self._opened_at + self.recovery_timeout

    # --- the protocol: ask, call, report ---------------------------------------------

    def allow(self) -> bool:
        """May a call go through now? In HALF_OPEN, saying yes uses up one probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.OPEN:
            return False
        if self._probes_admitted < self.half_open_max_calls:
            self._probes_admitted += 1
            return True
        return False  # every probe is taken; wait for their results

    def can_execute(self) -> bool:
        """The tutorial's name for `allow()`."""
        return self.allow()

    def record_success(self) -> None:
        """A call succeeded. Enough successful probes close a half-open breaker.

        A success reported while OPEN (a call let in before the breaker tripped) only
        resets the failure count: the breaker still waits for its probes. Reports never
        half-open the breaker themselves; only asking (`allow`, `state`) does.
        """
        self._failures = 0
        if self._state is BreakerState.HALF_OPEN:
            self._probe_successes += 1
            if self._probe_successes >= self.half_open_max_calls:
                reason = f"{self._probe_successes} probe call(s) succeeded"
                self._move(BreakerState.CLOSED, reason)

    def record_failure(self) -> None:
        """A call failed. Trips a closed breaker at the threshold; re-opens a half-open one.

        A failure reported while already OPEN (a call let in earlier) changes nothing:
        it must not push the recovery time further away.
        """
        self._failures += 1
        if self._state is BreakerState.CLOSED and self._failures >= self.failure_threshold:
            self._move(BreakerState.OPEN, f"{self._failures} consecutive failures")
        elif self._state is BreakerState.HALF_OPEN:
            self._move(BreakerState.OPEN, "a probe call failed")

    # --- transitions -----------------------------------------------------------------

    def _half_open_if_due(self) -> None:
        if self._state is BreakerState.OPEN:
            assert self._opened_at is not None
            if self.clock.now() - self._opened_at >= self.recovery_timeout:
                reason = f"recovery timeout of {self.recovery_timeout:g}s elapsed"
                self._move(BreakerState.HALF_OPEN, reason)

    def _move(self, to_state: BreakerState, reason: str) -> None:
        """Change state, reset what the new state counts, record it, tell the listener."""
        now = self.clock.now()
        transition = BreakerTransition(now, self.name, self._state, to_state, reason)
        self._state = to_state
        if to_state is BreakerState.OPEN:
            self._opened_at = now
        elif to_state is BreakerState.HALF_OPEN:
            self._probes_admitted = self._probe_successes = 0
        else:
            self._opened_at, self._failures = None, 0
        self.transitions.append(transition)
        if self.listener is not None:
            self.listener(transition)

    def __repr__(self) -> str:
        return (
            f"CircuitBreaker(name={self.name!r}, state={self.state.value!r}, "
            f"failures={self._failures}/{self.failure_threshold})"
        )


def _check_count(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{what} must be an int >= 1; got {value!r}")


def _is_seconds(value: object) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return math.isfinite(value) and value >= 0
