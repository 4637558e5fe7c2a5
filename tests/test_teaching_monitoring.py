"""The monitoring exercise checkers: a right answer passes, a wrong one gets "not yet" + a hint.

The "student answers" below are what a student might write in exercises/12_monitoring:
right ones in different styles, and the common mistakes each hint is written for.
"""

from __future__ import annotations

import math
import statistics

import pytest
from teaching_asserts import assert_not_yet, assert_passed, stub

from sitq import analysis
from sitq.teaching import monitoring as m

# --- the known dataset ----------------------------------------------------------------------


def test_example_history_is_the_same_every_time_and_has_an_outage() -> None:
    history = m.example_history()
    assert history == m.example_history()
    assert history != m.example_history(seed=1)
    windows = analysis.failure_rate(history, 30, start=m.T0, end=m.T0 + 300)
    worst = max(windows, key=lambda w: w.rate)
    assert worst.start - m.T0 == m.OUTAGE[0]
    assert analysis.final_outcomes(history)["failed"] > 0  # some dead letters


def test_the_checker_agrees_with_sitq_analysis_on_every_case() -> None:
    for _, attempts, window, start, end in m._rate_cases():
        expected = analysis.failure_rate(attempts, window, start=start, end=end)
        assert m._rates(attempts, window, start, end) == [w.rate for w in expected]


# --- exercise 1: failure rates -------------------------------------------------------------


FAILED = ("retrying", "failed", "worker_lost")


def loop_rates(attempts, window, start, end, *, failed=FAILED, when="finished_at", count=False):
    """A student's loop; the keywords reproduce the common mistakes below."""
    n = math.ceil((end - start) / window)
    totals, failures = [0] * n, [0] * n
    for a in attempts:
        t = getattr(a, when)
        if start <= t < end:
            k = int((t - start) // window)
            totals[k] += 1
            failures[k] += a.outcome in failed
    if count:
        return [float(f) for f in failures]
    return [f / t if t else 0.0 for f, t in zip(failures, totals, strict=True)]


def library_rates(attempts, window, start, end):
    return [w.rate for w in analysis.failure_rate(attempts, window, start=start, end=end)]


@pytest.mark.parametrize("answer", [loop_rates, library_rates])
def test_right_failure_rates_pass(answer) -> None:
    assert_passed(m.check_failure_rates(answer))


def percent(*args):
    return [100 * r for r in loop_rates(*args)]


def by_start_time(*args):
    return loop_rates(*args, when="started_at")


def only_failed(*args):
    return loop_rates(*args, failed=("failed",))


def cancelled_is_a_failure(*args):
    return loop_rates(*args, failed=(*FAILED, "cancelled"))


def nan_for_empty(*args):
    return [r if r else math.nan for r in loop_rates(*args)]


def one_window_short(*args):
    return loop_rates(*args)[:-1]


def counts_not_rates(*args):
    return loop_rates(*args, count=True)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (stub, ["not filled in"]),
        (percent, ["percentages", "fractions"]),
        (by_start_time, ["finished_at"]),
        (only_failed, ['"retrying" attempt failed too']),
        (cancelled_is_a_failure, ["cancellation is a choice"]),
        (nan_for_empty, ["NaN", "0.0"]),
        (one_window_short, ["5 rates", "6 windows"]),
        (counts_not_rates, ["window", "should have the rate"]),
        (lambda *args: None, ["returned None", "list of floats"]),
    ],
)
def test_wrong_failure_rates_get_a_hint(answer, words) -> None:
    assert_not_yet(m.check_failure_rates(answer), *words)


# --- exercise 2: alert rules ----------------------------------------------------------------


def baseline_rule(window, previous):
    if window.attempts < 10:
        return False
    past = [w.rate for w in previous if w.attempts >= 10]
    if len(past) < 3:
        return window.rate > 0.5
    mean, spread = statistics.fmean(past), statistics.pstdev(past)
    return window.rate > max(mean + 3 * spread, mean + 0.10)


def library_rule(window, previous):
    """sitq's own baseline rule, applied to the windows so far."""
    fired = analysis.detect_anomalies([*previous, window], min_attempts=10)
    return any(a.window is window for a in fired)


def relative_rule(window, previous):
    """Another style: a multiple of the usual rate, with a floor, and no statistics."""
    usual = [w.rate for w in previous if w.attempts >= 10]
    if window.attempts < 10 or not usual:
        return False
    mean = sum(usual) / len(usual)
    return window.rate > max(2 * mean, mean + 0.15)


@pytest.mark.parametrize("answer", [baseline_rule, library_rule, relative_rule])
def test_right_alert_rules_pass(answer) -> None:
    assert_passed(m.check_alert_rule(answer))


def fixed_threshold(window, previous):
    return window.rate > 0.2


def threshold_with_minimum(window, previous):
    return window.attempts >= 10 and window.rate > 0.2


def over_half(window, previous):
    return window.rate > 0.5


def over_half_with_minimum(window, previous):
    return window.attempts >= 10 and window.rate > 0.5


def baseline_without_minimum(window, previous):
    past = [w.rate for w in previous]
    if len(past) < 3:
        return False
    mean, spread = statistics.fmean(past), statistics.pstdev(past)
    return window.rate > max(mean + 3 * spread, mean + 0.10)


def two_sided(window, previous):
    """The baseline rule with abs(): it also fires when failures DROP far below normal."""
    if window.attempts < 10:
        return False
    past = [w.rate for w in previous if w.attempts >= 10]
    if len(past) < 3:
        return window.rate > 0.5
    mean, spread = statistics.fmean(past), statistics.pstdev(past)
    return abs(window.rate - mean) > max(3 * spread, 0.10)


def two_sided_z_score(window, previous):
    """A z-score test as in a statistics class: |z| > 3."""
    past = [w.rate for w in previous if w.attempts >= 10]
    if window.attempts < 10 or len(past) < 3:
        return False
    spread = statistics.pstdev(past) or 0.01
    return abs(window.rate - statistics.fmean(past)) / spread > 3 and (
        abs(window.rate - statistics.fmean(past)) > 0.10
    )


def never(window, previous):
    return False


def always(window, previous):
    return True


def truthy_number(window, previous):
    return window.failures


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (stub, ["not filled in"]),
        (fixed_threshold, ["a quiet night", "1/2", "few attempts"]),
        (threshold_with_minimum, ["a noisy service", "own past"]),
        (over_half, ["a quiet night", "window(s) [9]", "2/3", "few attempts"]),
        (over_half_with_minimum, ["stayed quiet", "a reliable service", "15/50", "own past"]),
        (baseline_without_minimum, ["a quiet night", "1/2", "window.attempts"]),
        (two_sided, ["a noisy service with a good minute", "window(s) [8]", "0/50", "RISE"]),
        (two_sided_z_score, ["a good minute", "not abs(window.rate - mean)"]),
        (never, ["stayed quiet", "an outage", "30/50"]),
        (always, ["steady traffic"]),
        (truthy_number, ["returned 4", "True (alert) or False"]),
    ],
)
def test_wrong_alert_rules_get_a_hint(answer, words) -> None:
    assert_not_yet(m.check_alert_rule(answer), *words)


def test_no_fixed_threshold_passes() -> None:
    """The noisy service must not fire at 34%, the reliable one must fire at 30%."""
    for percent in range(0, 101):

        def fixed(window, previous, limit=percent / 100):
            return window.attempts >= 10 and window.rate > limit

        assert not m.check_alert_rule(fixed).passed, percent


def test_rate_windows_builds_what_the_rule_receives() -> None:
    [first, empty] = m.rate_windows([(4, 1), (0, 0)], window=10)
    assert (first.end - first.start, first.attempts, first.failures, first.rate) == (10, 4, 1, 0.25)
    assert empty.rate == 0.0
