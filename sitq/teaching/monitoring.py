"""Checkers for exercises/12_monitoring: failure rates, alert rules and a dashboard.

The exercises work on attempt history as data, so every checker here runs the student's
function on known datasets (no queue, no clock) and compares the answer with what
`sitq.analysis` computes, or with what a sensible rule must say. When an answer matches a
common mistake (percent instead of a fraction, start time instead of finish time...), the
hint names that mistake.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sitq import analysis
from sitq.analysis import RateWindow
from sitq.task import Attempt
from sitq.teaching import Feedback, attempt, close_enough, not_yet, passed
from sitq.teaching.dashboard import check_dashboard
from sitq.teaching.datasets import ARRIVALS, KINDS, OUTAGE, T0, example_history

__all__ = [
    "ARRIVALS",
    "KINDS",
    "OUTAGE",
    "T0",
    "check_alert_rule",
    "check_dashboard",
    "check_failure_rates",
    "example_history",
    "rate_windows",
]

# --- exercise 1: failure rates over time -----------------------------------------------

RATES_HINT = (
    "for each window k, take the attempts with start + k*window <= finished_at < "
    "start + (k+1)*window; rate = failed ones / all of them (0.0 if there are none); an "
    'attempt failed if its outcome is "retrying", "failed" or "worker_lost"'
)


def _edge_cases() -> list[Attempt]:
    """A small history with every corner the rule has to get right (T0 = window start)."""

    def a(n: int, start: float, finish: float, outcome: str) -> Attempt:
        failed = outcome not in ("succeeded", "cancelled")
        kind = "WorkerLost" if outcome == "worker_lost" else "OSError" if failed else None
        return Attempt(task_id=f"t{n}", task_name="job", attempt=1, worker_id="w",
                       scheduled_for=T0 + start, started_at=T0 + start, finished_at=T0 + finish,
                       outcome=outcome, error_type=kind)  # fmt: skip

    return [
        a(1, -5, -1, "failed"),  # before the first window: not counted
        a(2, 1, 2, "succeeded"),
        a(3, 3, 4, "retrying"),  # a retried attempt failed too
        a(4, 8, 12, "failed"),  # started in window 0, finished in window 1: counts in 1
        a(5, 15, 20, "succeeded"),  # exactly on a boundary: belongs to the window it opens
        a(6, 21, 22, "cancelled"),  # a cancellation is a choice, not a failure
        a(7, 23, 24, "worker_lost"),
        # window 3 (30..40 s) has no attempts at all: its rate is 0.0
        a(8, 41, 42, "succeeded"),
        a(9, 55, 61, "failed"),  # finished after the end: not counted
    ]


def _rate_cases() -> list[tuple[str, list[Attempt], float, float, float]]:
    return [
        ("a small history with edge cases", _edge_cases(), 10.0, T0, T0 + 60),
        ("example_history()", example_history(), 30.0, T0, T0 + 330),
    ]


def _rates(
    attempts: Sequence[Attempt], window: float, start: float, end: float, **mistake: Any
) -> list[float]:
    """The right rates, or (with a keyword) the rates a known mistake gives."""
    n = math.ceil((end - start) / window)
    totals, fails = [0] * n, [0] * n
    for a in attempts:
        t = a.started_at if mistake.get("by_start") else a.finished_at
        if start <= t < end:
            k = min(int((t - start) // window), n - 1)
            totals[k] += 1
            if mistake.get("failed_only"):
                fails[k] += a.outcome == "failed"
            elif mistake.get("cancelled_fails"):
                fails[k] += a.outcome != "succeeded"
            else:
                fails[k] += analysis.is_failure(a)
    return [f / t if t else 0.0 for f, t in zip(fails, totals, strict=True)]


MISTAKES = {
    "by_start": "you placed attempts by when they started; place them by finished_at (when "
    "the outcome became known, which is what a monitor sees)",
    "failed_only": 'you counted only outcome "failed"; a "retrying" attempt failed too (it '
    'just gets another try), and so did "worker_lost"',
    "cancelled_fails": 'you counted "cancelled" as a failure; a cancellation is a choice, '
    "not something that went wrong",
}


def check_failure_rates(failure_rates: Callable[..., Sequence[float]]) -> Feedback:
    """Exercise 1: `failure_rates(attempts, window, start, end)` -> a rate per window."""

    def check() -> Feedback:
        for label, attempts, window, start, end in _rate_cases():
            got = failure_rates(list(attempts), window, start, end)
            feedback = _judge_rates(label, got, attempts, window, start, end)
            if feedback is not None:
                return feedback
        windows = analysis.failure_rate(example_history(), 30.0, start=T0, end=T0 + 330)
        peak = max(windows, key=lambda w: w.rate)
        return passed(
            f"your rates match on both datasets; in example_history() the worst window starts "
            f"at {peak.start - T0:g} s with {peak.rate:.0%} ({peak.failures}/{peak.attempts})"
        )

    return attempt(check, hint=RATES_HINT)


def _judge_rates(
    label: str, got: Any, attempts: list[Attempt], window: float, start: float, end: float
) -> Feedback | None:
    expected = _rates(attempts, window, start, end)
    if not isinstance(got, list | tuple) or not all(_is_number(r) for r in got):
        return not_yet(f"on {label}, your function returned {got!r:.80}", "return a list of floats")
    if len(got) != len(expected):
        return not_yet(
            f"on {label} with window={window:g} s over {end - start:g} s, you returned "
            f"{len(got)} rates; there are {len(expected)} windows",
            "one rate per window, empty windows included: ceil((end - start) / window)",
        )
    if close_enough(list(got), expected, 1e-6):
        return None
    if any(math.isnan(r) for r in got):
        return not_yet(f"on {label} you returned NaN", "an empty window has the rate 0.0")
    if close_enough(list(got), [100 * r for r in expected], 1e-4):
        return not_yet(f"on {label} your rates are percentages", "return fractions 0..1")
    for mistake, hint in MISTAKES.items():
        if close_enough(list(got), _rates(attempts, window, start, end, **{mistake: True}), 1e-6):
            return not_yet(f"on {label} some windows are off", hint)
    k = next(i for i, (g, e) in enumerate(zip(got, expected, strict=True)) if abs(g - e) > 1e-6)
    w0 = start - T0 + k * window
    return not_yet(
        f"on {label}, window {k} [{w0:g} s, {w0 + window:g} s) should have the rate "
        f"{expected[k]:.3f}, you returned {got[k]:.3f}",
        RATES_HINT,
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- exercise 2: alert on unusual error patterns ---------------------------------------

WARMUP = 3  # the first windows have no past to compare with: the checker does not judge them
STEADY = [(50, 4), (48, 3), (52, 5), (50, 6), (47, 3), (51, 4),
          (49, 5), (50, 3), (53, 6), (50, 4), (48, 5), (51, 4)]  # fmt: skip
NOISY = [(50, 15), (50, 13), (50, 17), (50, 14), (50, 16), (50, 15),
         (50, 12), (50, 17), (50, 16), (50, 14), (50, 15), (50, 13)]  # fmt: skip
RELIABLE = [(50, 1), (50, 0), (50, 2), (50, 1), (50, 1), (50, 0),
            (50, 2), (50, 1), (50, 1), (50, 0), (50, 1), (50, 2)]  # fmt: skip


def rate_windows(counts: Sequence[tuple[int, int]], window: float = 60.0) -> list[RateWindow]:
    """RateWindows from (attempts, failures) pairs, one window after the other from T0."""
    return [
        RateWindow(T0 + i * window, T0 + (i + 1) * window, n, f, f / n if n else 0.0)
        for i, (n, f) in enumerate(counts)
    ]


def _replace(counts: list[tuple[int, int]], **changes: tuple[int, int]) -> list[tuple[int, int]]:
    new = list(counts)
    for key, value in changes.items():
        new[int(key[1:])] = value
    return new


#: The student's rule: (this window, the windows before it) -> alert or not.
AlertRule = Callable[[RateWindow, list[RateWindow]], bool]


@dataclass(frozen=True)
class Scenario:
    """A stretch of traffic: the windows that must fire, those that may, and why."""

    name: str
    counts: list[tuple[int, int]]  # (attempts, failures) per window
    must: set[int]
    may: set[int]
    false_alarm: str  # why firing anywhere else is wrong
    missed: str = ""  # why staying quiet on a `must` window is wrong ("" = ALERT_HINT)


SCENARIOS = [
    Scenario("steady traffic", STEADY, set(), set(),
             "nothing unusual happens here: 6-12% is this service's normal; an alert must mean "
             "something changed"),
    Scenario("a quiet night", _replace(STEADY, w7=(2, 1), w8=(0, 0), w9=(3, 2)), set(), set(),
             "a handful of attempts is not yet a pattern, whatever its rate (2 failures of 3 "
             "is 67%): ignore windows with few attempts (look at window.attempts); an empty "
             "window has nothing to alert on"),
    Scenario("an outage", _replace(STEADY, w8=(50, 30), w9=(48, 34)), {8}, {9},
             "only windows 8 and 9 are unusual here"),
    Scenario("a noisy service", NOISY, set(), set(),
             "this service always fails 24-34% of attempts; compare a window with the service's "
             "own past (e.g. mean and standard deviation of the previous windows), not a fixed "
             "number"),
    Scenario("a noisy service with an outage", _replace(NOISY, w9=(50, 40)), {9}, set(),
             "only window 9 is unusual here"),
    Scenario("a noisy service with a good minute", _replace(NOISY, w8=(50, 0)), set(), set(),
             "window 8 is unusual, but good news: no failures at all. An alert calls someone "
             "to fix something, so it fires only on a RISE in the failure rate: compare "
             "window.rate - mean with the spread, not abs(window.rate - mean) (a two-sided "
             "z-score)"),
    Scenario("a reliable service with a partial outage", _replace(RELIABLE, w8=(50, 15)), {8},
             set(), "only window 8 is unusual here",
             "this service normally fails 0-4% of attempts, so 30% is a big change even though "
             "it is below 50%; no fixed threshold suits both this service and the noisy one: "
             "compare each window with the service's own past (mean and spread of the "
             "previous windows)"),
]  # fmt: skip

ALERT_HINT = (
    "skip windows with few attempts; otherwise alert when window.rate is well above the "
    "previous windows' mean rate (e.g. mean + 3 standard deviations, and at least 10 "
    "points above the mean)"
)


def check_alert_rule(unusual: AlertRule) -> Feedback:
    """Exercise 2: `unusual(window, previous)` fires on spikes, and only on spikes."""

    def check() -> Feedback:
        for scenario in SCENARIOS:
            if (problem := _judge_scenario(unusual, scenario)) is not None:
                return problem
        return passed(
            f"your rule fired on all {sum(bool(s.must) for s in SCENARIOS)} outages and stayed "
            f"quiet on {sum(not s.must for s in SCENARIOS)} kinds of normal traffic, a quiet "
            "night, a noisy service and a good minute included"
        )

    return attempt(check, hint=ALERT_HINT)


def _judge_scenario(unusual: AlertRule, scenario: Scenario) -> Feedback | None:
    """None if the rule fires where it must and nowhere it must not, in this scenario."""
    name, windows, fired = repr(scenario.name), rate_windows(scenario.counts), set()
    for i, window in enumerate(windows):
        verdict = unusual(window, windows[:i])
        if not isinstance(verdict, bool):
            return not_yet(
                f"unusual() returned {verdict!r:.60} for window {i} of {name}",
                "return True (alert) or False (all is well)",
            )
        if verdict and i >= WARMUP:
            fired.add(i)
    if false := sorted(fired - scenario.must - scenario.may):
        w = windows[false[0]]
        return not_yet(
            f"your rule fired on {name} at window(s) {false}: window {false[0]} had "
            f"{w.failures}/{w.attempts} failed attempts",
            scenario.false_alarm,
        )
    if missed := sorted(scenario.must - fired):
        w = windows[missed[0]]
        return not_yet(
            f"your rule stayed quiet on {name} at window {missed[0]}, where "
            f"{w.failures}/{w.attempts} attempts failed ({w.rate:.0%})",
            scenario.missed or "that jump is the pattern to alert on: " + ALERT_HINT,
        )
    return None
