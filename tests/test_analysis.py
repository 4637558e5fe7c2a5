"""sitq.analysis: exact numbers from a small, hand-built attempt history."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import pytest

from sitq.analysis import (
    Anomaly,
    RateWindow,
    RetryLateness,
    StateSpan,
    attempts_until_success,
    breaker_states,
    detect_anomalies,
    failure_rate,
    failures_by_error_type,
    final_outcomes,
    queue_waits,
    retry_lateness,
    run_durations,
    summary_stats,
    timelines,
)
from sitq.task import Attempt

T = 1_000.0  # an arbitrary epoch: every time below is T + offset


def attempt(
    task_id: str,
    n: int,
    scheduled: float,
    start: float,
    finish: float,
    outcome: str,
    error_type: str | None = None,
    next_delay: float | None = None,
    name: str | None = None,
) -> Attempt:
    """An Attempt with times given as offsets from T."""
    return Attempt(
        task_id=task_id,
        task_name=name or f"task_{task_id}",
        attempt=n,
        worker_id="w1",
        scheduled_for=T + scheduled,
        started_at=T + start,
        finished_at=T + finish,
        outcome=outcome,
        error_type=error_type,
        error_message=None if error_type is None else "boom",
        next_delay=next_delay,
    )


def history() -> list[Attempt]:
    """A fails twice then succeeds (gaps 1 s, 2 s); B fails three times; C succeeds at once."""
    return [
        attempt("a", 1, 0, 0, 1, "retrying", "ConnectionError", 1.0, name="fetch"),
        attempt("a", 2, 2, 2, 3, "retrying", "TimeoutError", 2.0, name="fetch"),
        attempt("a", 3, 5, 5, 6, "succeeded", name="fetch"),
        attempt("b", 1, 0.5, 1, 1.5, "retrying", "ConnectionError", 1.0, name="charge"),
        attempt("b", 2, 2.5, 3, 3.5, "retrying", "ValueError", 1.0, name="charge"),
        attempt("b", 3, 4.5, 4.5, 5, "failed", "ConnectionError", name="charge"),
        attempt("c", 1, 2, 2.5, 2.5, "succeeded", name="email"),
    ]


# --- timelines ----------------------------------------------------------------------


def test_timelines_group_order_and_gaps() -> None:
    a, b, c = timelines(history())

    assert [t.task_id for t in (a, b, c)] == ["a", "b", "c"]  # by first start
    assert [x.attempt for x in a.attempts] == [1, 2, 3]
    assert a.gaps == (1.0, 2.0)
    assert b.gaps == (1.5, 1.0)
    assert c.gaps == ()
    assert (a.final_outcome, b.final_outcome, c.final_outcome) == (
        "succeeded",
        "failed",
        "succeeded",
    )
    assert (a.total_attempts, b.total_attempts, c.total_attempts) == (3, 3, 1)
    assert (a.first_start, a.last_finish) == (T, T + 6)
    assert b.gave_up and not a.gave_up


def test_timelines_order_attempts_by_start_whatever_the_input_order() -> None:
    [a] = timelines(list(reversed(history()[:3])))

    assert [x.attempt for x in a.attempts] == [1, 2, 3]


def test_timelines_that_start_together_keep_the_order_they_first_appear_in() -> None:
    # A crowd on a FakeClock starts at one instant: the rows must not follow random ids.
    crowd = [attempt(task_id, 1, 0, 0, 0, "succeeded") for task_id in ("zz", "mm", "aa")]

    assert [t.task_id for t in timelines(crowd)] == ["zz", "mm", "aa"]
    assert [t.task_id for t in timelines(crowd[::-1])] == ["aa", "mm", "zz"]


def test_a_task_still_retrying_is_not_done() -> None:
    [t] = timelines([attempt("x", 1, 0, 0, 1, "retrying", "OSError", 5.0)])
    [lost] = timelines([attempt("y", 1, 0, 0, 1, "worker_lost", None, None)])

    assert not t.done and not t.gave_up
    assert lost.done and lost.gave_up  # lost with no retry planned: failed for good


# --- failure rate and alerts --------------------------------------------------------


def test_failure_rate_per_window_from_explicit_start() -> None:
    windows = failure_rate(history(), 2.0, start=T)

    assert windows == [
        RateWindow(T + 0, T + 2, attempts=2, failures=2, rate=1.0),
        RateWindow(T + 2, T + 4, attempts=3, failures=2, rate=2 / 3),
        RateWindow(T + 4, T + 6, attempts=1, failures=1, rate=1.0),
        RateWindow(T + 6, T + 8, attempts=1, failures=0, rate=0.0),
    ]


def test_failure_rate_defaults_to_first_and_last_finish() -> None:
    windows = failure_rate(history(), 2.0)

    assert [(w.start - T, w.attempts, w.failures) for w in windows] == [
        (1, 3, 2),
        (3, 2, 2),
        (5, 2, 1),
    ]


def test_failure_rate_with_end_cuts_the_last_window_and_keeps_empty_ones() -> None:
    windows = failure_rate(history(), 2.0, start=T, end=T + 5)

    assert [(w.start - T, w.end - T, w.attempts) for w in windows] == [
        (0, 2, 2),
        (2, 4, 3),
        (4, 5, 0),
    ]
    assert windows[-1].rate == 0.0


def test_cancelled_attempts_count_but_do_not_fail() -> None:
    [w] = failure_rate([attempt("x", 1, 0, 0, 1, "cancelled")], 10.0)

    assert (w.attempts, w.failures, w.rate) == (1, 0, 0.0)


@pytest.mark.parametrize("window", [0, -1.0, math.nan])
def test_failure_rate_rejects_a_window_that_is_not_positive(window: float) -> None:
    with pytest.raises(ValueError, match="window"):
        failure_rate(history(), window)


def test_threshold_alert_fires_on_windows_above_it() -> None:
    windows = failure_rate(history(), 2.0, start=T)

    fired = detect_anomalies(windows, threshold=0.9)

    assert [f.window.start - T for f in fired] == [0, 4]
    assert all(f.rule == "threshold" and f.limit == 0.9 for f in fired)
    assert fired[0].reason == "failure rate 100% (2/2 attempts) above the threshold 90%"


def test_min_attempts_keeps_a_single_failure_from_alerting() -> None:
    windows = failure_rate(history(), 2.0, start=T)

    fired = detect_anomalies(windows, threshold=0.9, min_attempts=2)

    assert [f.window.start - T for f in fired] == [0]


def test_baseline_alert_fires_on_a_spike_only() -> None:
    windows = [RateWindow(i, i + 1, 10, 1, 0.1) for i in range(4)]
    spike = RateWindow(4, 5, 10, 9, 0.9)

    [alert] = detect_anomalies([*windows, spike], k=3)

    assert isinstance(alert, Anomaly)
    assert (alert.window, alert.rule, alert.limit) == (spike, "baseline", pytest.approx(0.1))
    assert alert.reason.startswith("failure rate 90% (9/10 attempts) above baseline 10%")


def test_baseline_needs_at_least_two_other_windows() -> None:
    assert detect_anomalies([RateWindow(0, 1, 1, 0, 0.0), RateWindow(1, 2, 1, 1, 1.0)]) == []


# --- distributions ------------------------------------------------------------------


def test_failures_by_error_type_sorted_by_count_then_name() -> None:
    counts = failures_by_error_type(history())

    assert list(counts.items()) == [("ConnectionError", 3), ("TimeoutError", 1), ("ValueError", 1)]


def test_worker_lost_counts_as_workerlost_and_cancelled_is_not_a_failure() -> None:
    records = [
        attempt("x", 1, 0, 0, 1, "worker_lost", None, 1.0),
        attempt("x", 2, 2, 2, 3, "cancelled"),
    ]

    assert failures_by_error_type(records) == {"WorkerLost": 1}


def test_attempts_until_success_and_final_outcomes() -> None:
    assert attempts_until_success(history()) == {1: 1, 3: 1}
    assert final_outcomes(history()) == {"succeeded": 2, "failed": 1}


def test_queue_waits_and_run_durations() -> None:
    assert queue_waits(history()) == [0.0, 0.5, 0.5]
    assert run_durations(history()) == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0]


def test_retry_lateness_compares_planned_and_actual_start() -> None:
    late = retry_lateness(history())

    assert [(r.task_id, r.attempt, r.lateness) for r in late] == [
        ("a", 2, 0.0),
        ("a", 3, 0.0),
        ("b", 2, 0.5),
        ("b", 3, 0.0),
    ]
    assert late[2] == RetryLateness("b", "charge", 2, planned=T + 2.5, actual=T + 3, lateness=0.5)
    assert all(r.held == 0 for r in late)


def test_retry_lateness_counts_a_retry_held_by_a_breaker() -> None:
    # The policy asked for 1 s; an open breaker moved the retry to t=10; it ran at t=12.
    records = [
        attempt("x", 1, 0, 0, 0, "retrying", "ConnectionError", 1.0),
        attempt("x", 2, 10, 12, 12, "succeeded"),
    ]

    [late] = retry_lateness(records)

    assert (late.planned, late.actual) == (T + 1, T + 12)
    assert late.lateness == 11.0  # the gap drawn (12 s) minus the backoff (1 s)
    assert late.held == 9.0  # of which the breaker held it 9 s; 2 s waiting for a worker


def test_retry_lateness_without_the_previous_attempt_uses_the_due_time() -> None:
    [late] = retry_lateness([attempt("x", 2, 5, 7, 7, "succeeded")])

    assert (late.planned, late.lateness, late.held) == (T + 5, 2.0, 0.0)


def test_summary_stats() -> None:
    stats = summary_stats([4.0, 1.0, 3.0, 2.0])

    assert (stats.count, stats.mean, stats.p50, stats.max) == (4, 2.5, 2.5, 4.0)
    assert stats.p95 == pytest.approx(3.85)
    assert summary_stats([7.0]).p95 == 7.0


def test_summary_stats_of_nothing_is_nan_not_an_error() -> None:
    stats = summary_stats([])

    assert stats.count == 0
    assert all(math.isnan(v) for v in (stats.mean, stats.p50, stats.p95, stats.max))


# --- circuit breaker ----------------------------------------------------------------


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class Transition:
    """A stand-in for sitq.policy.breaker.BreakerTransition."""

    at: float
    name: str
    from_state: State
    to_state: State
    reason: str = ""


def breaker_history(name: str = "db") -> list[Transition]:
    return [
        Transition(10, name, State.CLOSED, State.OPEN, "5 failures"),
        Transition(15, name, State.OPEN, State.HALF_OPEN, "cool-down over"),
        Transition(16, name, State.HALF_OPEN, State.CLOSED, "probe succeeded"),
    ]


def test_breaker_states_cover_start_to_end() -> None:
    spans = breaker_states(breaker_history(), start=0, end=20)

    assert spans == [(0, 10, "closed"), (10, 15, "open"), (15, 16, "half_open"), (16, 20, "closed")]
    assert spans[1] == StateSpan(start=10, end=15, state="open")


def test_breaker_states_clip_to_the_window_and_follow_one_name() -> None:
    mixed = [*breaker_history("db"), Transition(11, "smtp", State.CLOSED, State.OPEN)]

    spans = breaker_states(mixed, start=12, end=15.5, name="db")

    assert spans == [(12, 15, "open"), (15, 15.5, "half_open")]


# --- empty in, empty out ------------------------------------------------------------


def test_empty_input_gives_empty_output() -> None:
    assert timelines([]) == []
    assert failure_rate([], 1.0) == []
    assert detect_anomalies([], threshold=0.1) == []
    assert failures_by_error_type([]) == {}
    assert attempts_until_success([]) == {}
    assert final_outcomes([]) == {}
    assert queue_waits([]) == []
    assert run_durations([]) == []
    assert retry_lateness([]) == []
    assert breaker_states([], start=0, end=10) == []
