"""The monitoring exercise checkers: a right answer passes, a wrong one gets "not yet" + a hint.

The "student answers" below are what a student might write in notebook 10's exercises:
right ones in different styles, and the common mistakes each hint is written for.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from teaching_asserts import assert_not_yet, assert_passed, stub

from sitq import analysis, plots
from sitq.teaching import monitoring as m


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


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


@pytest.mark.parametrize("answer", [baseline_rule, library_rule])
def test_right_alert_rules_pass(answer) -> None:
    assert_passed(m.check_alert_rule(answer))


def fixed_threshold(window, previous):
    return window.rate > 0.2


def threshold_with_minimum(window, previous):
    return window.attempts >= 10 and window.rate > 0.2


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
        (never, ["stayed quiet", "an outage", "30/50"]),
        (always, ["steady traffic"]),
        (truthy_number, ["returned 4", "True (alert) or False"]),
    ],
)
def test_wrong_alert_rules_get_a_hint(answer, words) -> None:
    assert_not_yet(m.check_alert_rule(answer), *words)


def test_rate_windows_builds_what_the_rule_receives() -> None:
    [first, empty] = m.rate_windows([(4, 1), (0, 0)], window=10)
    assert (first.end - first.start, first.attempts, first.failures, first.rate) == (10, 4, 1, 0.25)
    assert empty.rate == 0.0


# --- exercise 3: the dashboard -------------------------------------------------------------


def grid_of_views(history):
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    plots.failure_distribution(history, ax=axes[0, 0])
    plots.failure_rate_over_time(history, window=30, ax=axes[0, 1])  # adds a twin axis
    plots.attempts_histogram(history, ax=axes[1, 0])
    plots.retry_timeline(history, ax=axes[1, 1], max_tasks=10)
    return fig


def hand_made(history):
    fig, axes = plt.subplots(1, 3)
    for ax, outcome in zip(axes, ("succeeded", "retrying", "failed"), strict=True):
        ax.plot([a.finished_at - m.T0 for a in history if a.outcome == outcome])
        ax.set(title=f"{outcome} attempts", xlabel="attempt (index)", ylabel="time (s)")
    return fig


@pytest.mark.parametrize("answer", [grid_of_views, hand_made, plots.dashboard])
def test_right_dashboards_pass(answer) -> None:
    feedback = m.check_dashboard(answer)
    assert_passed(feedback)
    assert plt.get_fignums(), "the figure stays open so the notebook shows it"


def two_panels(history):
    fig, axes = plt.subplots(1, 2)
    plots.failure_distribution(history, ax=axes[0])
    plots.attempts_histogram(history, ax=axes[1])
    return fig


def untitled(history):
    fig, axes = plt.subplots(1, 3)
    for ax in axes:
        ax.plot([1, 2])
        ax.set(xlabel="x (s)", ylabel="y (count)")
    return fig


def unlabelled(history):
    fig, axes = plt.subplots(1, 3)
    for k, ax in enumerate(axes):
        ax.plot([1, 2])
        ax.set(title=f"view {k}", xlabel="x (s)")
    return fig


def empty_panel(history):
    fig = hand_made(history)
    fig.axes[2].clear()
    fig.axes[2].set(title="later", xlabel="x", ylabel="y")
    return fig


def same_titles(history):
    fig = hand_made(history)
    for ax in fig.axes:
        ax.set_title("failures")
    return fig


def one_axes(history):
    return plots.failure_distribution(history)


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (stub, ["not filled in"]),
        (two_panels, ["2 panel(s)", "at least 3"]),
        (untitled, ["no title"]),
        (unlabelled, ["y axis label"]),
        (empty_panel, ["'later' is empty"]),
        (same_titles, ["same title"]),
        (one_axes, ["one Axes", "return fig"]),
        (lambda history: None, ["NoneType, not a Figure"]),
    ],
)
def test_wrong_dashboards_get_a_hint(answer, words) -> None:
    assert_not_yet(m.check_dashboard(answer), *words)
