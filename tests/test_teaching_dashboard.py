"""The dashboard checker: panels must be titled, labelled, and drawn from the history.

Before, any line counted as "something drawn": panels of made-up numbers, or of lines
with no points, passed. The checker now also builds each dashboard from a second history
and rejects a panel that draws the same numbers whatever the history.
"""

from __future__ import annotations

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


# --- right answers, in several styles ---------------------------------------------------


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


def counted_by_hand(history):
    """The solution notebook's style: sitq views, plus a bar chart counted by hand."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), layout="constrained")
    plots.failure_distribution(history, ax=axes[0, 0])
    plots.failure_rate_over_time(history, window=30, threshold=0.4, ax=axes[0, 1])
    plots.attempts_histogram(history, ax=axes[1, 0])
    names = sorted({a.task_name for a in history})
    dead = [sum(a.task_name == n and a.outcome == "failed" for a in history) for n in names]
    axes[1, 1].bar(names, dead)
    axes[1, 1].set(title="Dead letters by task", xlabel="task", ylabel="tasks (count)")
    return fig


def from_analysis(history):
    """Numbers from sitq.analysis, drawn with plain matplotlib: bars, a line, a scatter."""
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(14, 4))
    by_type = analysis.failures_by_error_type(history)
    left.barh(list(by_type), list(by_type.values()))
    left.set(title="Failures by error type", xlabel="failed attempts", ylabel="error type")
    windows = analysis.failure_rate(history, 30, start=m.T0, end=m.T0 + 330)
    middle.plot([w.start - m.T0 for w in windows], [w.rate for w in windows], marker="o")
    middle.set(title="Failure rate", xlabel="time (s)", ylabel="failed / all attempts")
    failed = [a for a in history if a.outcome != "succeeded"]
    right.scatter([a.finished_at - m.T0 for a in failed], [a.attempt for a in failed])
    right.set(title="When attempts failed", xlabel="time (s)", ylabel="attempt number")
    return fig


@pytest.mark.parametrize(
    "answer", [grid_of_views, hand_made, plots.dashboard, counted_by_hand, from_analysis]
)
def test_right_dashboards_pass(answer) -> None:
    feedback = m.check_dashboard(answer)
    assert_passed(feedback)
    assert "drawn from the history" in feedback.message
    assert len(plt.get_fignums()) == 1, "the shown figure stays open, the other is closed"


# --- wrong answers -------------------------------------------------------------------------


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


def three(titles=("Failures", "Failure rate", "Retries")):
    fig, axes = plt.subplots(1, 3)
    for ax, title in zip(axes, titles, strict=True):
        ax.set(title=title, xlabel="time (s)", ylabel="failures (count)")
    return fig, axes


def made_up_lines(history):
    fig, axes = three()
    for k, ax in enumerate(axes):
        ax.plot([0, 60, 120, 180], [1 + k, 4, 2, 7])
    return fig


def empty_lines(history):
    fig, axes = three()
    for ax in axes:
        ax.plot([], [])
    return fig


def one_made_up_panel(history):
    fig, axes = three()
    plots.failure_distribution(history, ax=axes[0])
    plots.attempts_histogram(history, ax=axes[1])
    axes[2].bar(["fetch", "email", "resize"], [3, 5, 1])
    for ax, title in zip(axes, ("Failures", "Attempts", "Retries by task"), strict=True):
        ax.set(title=title, xlabel="x (unit)", ylabel="y (count)")
    return fig


KNOWN = m.example_history()  # a variable outside the function, as in the notebook


def the_global_history(history):
    fig, axes = plt.subplots(1, 3)
    plots.failure_distribution(KNOWN, ax=axes[0])
    plots.attempts_histogram(KNOWN, ax=axes[1])
    plots.failure_rate_over_time(KNOWN, window=30, ax=axes[2])
    return fig


def zero_bars(history):
    fig, axes = three()
    plots.failure_distribution(history, ax=axes[0])
    plots.attempts_histogram(history, ax=axes[1])
    axes[2].bar(["fetch", "email"], [0, 0])
    for ax, title in zip(axes, ("Failures", "Attempts", "Cancelled"), strict=True):
        ax.set(title=title, xlabel="x (unit)", ylabel="y (count)")
    return fig


def one_view_three_titles(history):
    """The same panel drawn three times under three titles."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    titles = ("Failures by type", "What fails most", "Error breakdown")
    for ax, title in zip(axes, titles, strict=True):
        plots.failure_distribution(history, ax=ax)
        ax.set_title(title)
    return fig


def two_of_four_alike(history):
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    plots.failure_distribution(history, ax=axes[0, 0])
    plots.failure_rate_over_time(history, window=30, ax=axes[0, 1])
    plots.attempts_histogram(history, ax=axes[1, 0])
    plots.attempts_histogram(history, ax=axes[1, 1])
    axes[1, 1].set_title("Retries per task")
    return fig


def nan_points(history):
    fig, axes = three()
    for ax in axes:
        ax.plot([float("nan")] * 3)
    return fig


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
        (made_up_lines, ["'Failures' draws the same numbers whatever the history", "argument"]),
        (empty_lines, ["'Failures' is empty", "single data point"]),
        (one_made_up_panel, ["'Retries by task' draws the same numbers whatever the history"]),
        (the_global_history, ["whatever the history", "outside the function"]),
        (zero_bars, ["'Cancelled' is empty", "a bar"]),
        (nan_points, ["is empty"]),
        (
            one_view_three_titles,
            ["panels 'Failures by type' and 'What fails most' draw the same numbers", "own data"],
        ),
        (two_of_four_alike, ["and 'Retries per task' draw the same numbers", "one view"]),
    ],
)
def test_wrong_dashboards_get_a_hint(answer, words) -> None:
    assert_not_yet(m.check_dashboard(answer), *words)
