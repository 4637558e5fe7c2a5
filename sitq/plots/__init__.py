"""Matplotlib views of a queue's attempt history: one function per question.

Every view is `f(data, *, ax=None) -> Axes`: it draws on the Axes you give it (or on a new
figure) and returns it, so views compose into dashboards and notebook cells. Nothing here
calls plt.show() or picks a backend; that is the notebook's (or the test's) choice. Times on
x axes are seconds since the earliest time in the data, so a FakeClock run reads 0, 1, 2 s.
The numbers come from `sitq.analysis`; this module only draws them.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

try:
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError as _missing:  # the core install has no plotting stack
    from sitq.errors import MissingExtraError

    raise MissingExtraError.needs("plots", "sitq.plots", _missing) from _missing

from sitq import analysis
from sitq.plots.policies import (
    breaker_timeline,
    latency_distribution,
    policy_preview,
    shade_breaker,
)
from sitq.plots.style import (
    BREAKER_COLORS,
    EDGE,
    OUTCOME_COLORS,
    SERIES_COLORS,
    TIME_LABEL,
    new_axes,
    no_data,
    outcome_order,
    short,
    time_origin,
)
from sitq.task import Attempt
from sitq.views.html import task_labels

__all__ = [
    "BREAKER_COLORS", "OUTCOME_COLORS", "SERIES_COLORS", "attempts_histogram", "breaker_timeline",
    "dashboard", "failure_distribution", "failure_rate_over_time", "latency_distribution",
    "policy_preview", "retry_timeline",
]  # fmt: skip

#: The narrowest backoff gap (a fraction of the plot's time span) that gets a text label.
MIN_LABELLED_GAP = 0.07
#: Gap labels' font size (points), and the width of one of their characters, as a fraction
#: of it (DejaVu Sans digits and lower case average about 0.6 em).
GAP_FONT_SIZE = 8
CHARACTER_WIDTH = 0.6


def _seconds_per_character(ax: Axes, span: float) -> float:
    """How many seconds of the x axis one character of a gap label covers, roughly.

    The axes' width is read before the figure's layout settles, so this is an estimate;
    it only has to keep labels in one row from printing over each other.
    """
    points = ax.get_window_extent().width / ax.figure.dpi * 72
    seconds_per_point = 1.07 * span / max(points, 1.0)  # the x limits span about 1.07 spans
    return CHARACTER_WIDTH * GAP_FONT_SIZE * seconds_per_point


def _gap_label(attempt: int, gap: float, backoff: float | None) -> str:
    """The gap drawn, "try 3 +11.5s", over "(backoff 1.68s)" when the policy asked for less."""
    label = f"try {attempt} +{gap:.3g}s"
    if backoff is not None and abs(gap - backoff) > max(0.01, 0.02 * gap):
        label += f"\n(backoff {backoff:.3g}s)"  # two short lines fit a gap better than one
    return label


def retry_timeline(
    attempts: Iterable[Attempt],
    *,
    ax: Axes | None = None,
    max_tasks: int = 30,
    origin: float | None = None,
) -> Axes:
    """One row per task, one bar per attempt coloured by outcome, dashed backoff gaps.

    Rows are labelled by task name, numbered when several tasks share one ("charge_card #2",
    see `sitq.views.html.task_labels`), never by hash id. Each retry is labelled
    "try k +Ds" above its gap: attempt number and the gap drawn (from the end of one
    attempt to the start of the next). When that gap is longer than the
    backoff the policy chose (an open breaker or busy workers held the retry), the label
    says both, on two lines: "try 3 +11.5s" over "(backoff 1.68s)". Gaps narrower than
    MIN_LABELLED_GAP of the time span stay unlabelled, and so does a label that would
    print over the one before it in its row. Bars have a minimum width (a small fraction
    of the time span) so instant attempts on a FakeClock stay visible.
    `origin` (epoch s, default the earliest time shown) is time zero: pass it to line up
    several plots.
    """
    tasks = analysis.timelines(attempts)
    shown = tasks[: max(max_tasks, 0)]
    title = "Retry timeline: one bar per attempt"
    if len(shown) < len(tasks):
        title += f" (first {len(shown)} of {len(tasks)} tasks)"
    size = (10, 1.6 + 0.5 * max(len(shown), 3))
    ax = new_axes(ax, title, TIME_LABEL, "task", size)
    if not shown:
        return no_data(ax)
    records = [a for t in shown for a in t.attempts]
    t0 = time_origin(records) if origin is None else origin
    span = max(a.finished_at for a in records) - t0 or 1.0
    bars: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    per_char = _seconds_per_character(ax, span)
    for row, task in enumerate(shown):
        free_from = -math.inf  # where the row's last label ends: the next starts after it
        for i, (gap, a) in enumerate(zip(task.gaps, task.attempts[1:], strict=True)):
            prev = task.attempts[i]
            x0, x1 = prev.finished_at - t0, a.started_at - t0
            ax.plot([x0, x1], [row, row], linestyle="--", linewidth=1, color="0.45", zorder=0.5)
            text = _gap_label(a.attempt, gap, prev.next_delay)
            half = per_char * max(len(line) for line in text.splitlines()) / 2
            middle = (x0 + x1) / 2
            if x1 - x0 < span * MIN_LABELLED_GAP or middle - half < free_from:
                continue  # too narrow, or it would print over the label before it
            free_from = middle + half
            ax.annotate(
                text,
                xy=(middle, row),
                fontsize=GAP_FONT_SIZE,
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                va="bottom",
            )
        for a in task.attempts:
            width = max(a.finished_at - a.started_at, span * 0.008)
            bars[a.outcome].append((row, a.started_at - t0, width))
    for outcome in sorted(bars, key=outcome_order):
        rows, lefts, widths = zip(*bars[outcome], strict=True)
        color = OUTCOME_COLORS.get(outcome, "black")
        ax.barh(rows, widths, left=lefts, height=0.45, color=color, label=outcome, **EDGE)
    labels = task_labels((t.task_name, t.task_id) for t in shown)
    ax.set_yticks(range(len(shown)), [short(labels[t.task_id]) for t in shown])
    ax.set_ylim(len(shown) - 0.4, -0.7)  # first task on top, room for the labels
    ax.set_xlim(min(0.0, time_origin(records) - t0) - 0.02 * span, 1.05 * span)
    ax.legend(title="outcome", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return ax


def failure_distribution(
    data: Iterable[Attempt] | Mapping[str, int], *, ax: Axes | None = None
) -> Axes:
    """Failed attempts per error type, most frequent on top, each bar labelled.

    Accepts attempts or a ready {error_type: count} dict (from failures_by_error_type).
    """
    if isinstance(data, Mapping):
        counts = dict(sorted(data.items(), key=lambda item: (-item[1], item[0])))
    else:
        counts = analysis.failures_by_error_type(data)
    ax = new_axes(ax, "Failures by error type", "failed attempts (count)", "error type")
    if not counts:
        return no_data(ax)
    bars = ax.barh(list(counts), list(counts.values()), color=OUTCOME_COLORS["failed"])
    ax.bar_label(bars, padding=3)
    ax.invert_yaxis()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(0, max(counts.values()) * 1.15)
    return ax


def attempts_histogram(attempts: Iterable[Attempt], *, ax: Axes | None = None) -> Axes:
    """How many attempts succeeded tasks needed, next to a hatched bar for tasks that gave up.

    Tasks still retrying (not yet done) and cancelled tasks are left out.
    """
    tasks = analysis.timelines(attempts)
    took = Counter(t.total_attempts for t in tasks if t.final_outcome == "succeeded")
    gave_up = sum(t.gave_up for t in tasks)
    ax = new_axes(ax, "Attempts until success", "attempts per task (count)", "tasks (count)")
    if not took and not gave_up:
        return no_data(ax)
    top = max(took, default=0)
    ticks: list[float]  # whole attempt counts, then the "gave up" bar set apart at top + 1.5
    ticks, labels = list(range(1, top + 1)), [str(k) for k in range(1, top + 1)]
    if took:
        keys, color = sorted(took), OUTCOME_COLORS["succeeded"]
        label = "succeeded after k attempts"
        bars = ax.bar(keys, [took[k] for k in keys], color=color, label=label, edgecolor="black")
        ax.bar_label(bars, padding=2)
    if gave_up:
        x = top + 1.5 if took else 1
        label, color = "never succeeded (gave up)", OUTCOME_COLORS["failed"]
        bars = ax.bar([x], [gave_up], color=color, hatch="//", label=label, edgecolor="black")
        ax.bar_label(bars, padding=2)
        ticks.append(x)
        labels.append("gave up")
    ax.set_xticks(ticks, labels)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, max([*took.values(), gave_up]) * 1.2)
    ax.legend(loc="upper right", fontsize=8)
    return ax


def _nice_window(span: float) -> float:
    """A round window length (1, 2 or 5 x 10^k s) giving roughly 15 windows over span."""
    if span <= 0:
        return 1.0
    target = span / 15
    scale: float = 10 ** math.floor(math.log10(target))
    return next(m * scale for m in (1, 2, 5, 10) if m * scale >= target)


def failure_rate_over_time(
    attempts: Iterable[Attempt],
    *,
    window: float | None = None,
    ax: Axes | None = None,
    threshold: float | None = None,
    transitions: Iterable[Any] | None = None,
    show_counts: bool = True,
) -> Axes:
    """Failure rate (%) per time window as a step line, with what explains it around it.

    `window` defaults to a round length giving ~15 windows. Attempt counts per window are
    grey bars on a right-hand axis (`show_counts`): 100% of 1 attempt is not 100% of 50.
    `threshold` (a rate 0..1) draws the alert line and marks windows that fire it;
    breaker `transitions` shade the times a breaker was open or half open.
    """
    if threshold is not None and not 0 <= threshold <= 1:
        raise ValueError(f"threshold is a rate between 0 and 1, got {threshold!r}")
    records = list(attempts)
    ax = new_axes(ax, "Failure rate over time", TIME_LABEL, "failure rate (%)", (9, 4.5))
    if not records:
        return no_data(ax)
    t0 = time_origin(records)
    if window is None:
        window = _nice_window(max(a.finished_at for a in records) - t0)
    windows = analysis.failure_rate(records, window, start=t0)
    ax.set_title(f"Failure rate per {window:g} s window")
    edges = [w.start - t0 for w in windows] + [windows[-1].end - t0]
    rates = [100 * w.rate for w in windows]
    extra: list[Any] = []
    if transitions is not None:
        extra += shade_breaker(ax, transitions, t0, windows[-1].end)
    if show_counts:
        twin = ax.twinx()
        counts, label = [w.attempts for w in windows], "attempts per window"
        twin.bar(edges[:-1], counts, window, align="edge", color="0.6", alpha=0.35, label=label)
        twin.set_ylabel("attempts per window (count)")
        twin.yaxis.set_major_locator(MaxNLocator(integer=True))
        twin.set_ylim(0, max(counts) * 1.4)
        ax.set_zorder(twin.get_zorder() + 1)  # the rate line in front of the count bars
        ax.patch.set_visible(False)
        extra += twin.get_legend_handles_labels()[0]
    color = OUTCOME_COLORS["failed"]
    ax.step(edges, [*rates, rates[-1]], where="post", color=color, lw=2, label="failure rate")
    if threshold is not None:
        label = f"alert threshold ({threshold:.0%})"
        ax.axhline(100 * threshold, color="black", linestyle="--", lw=1, label=label)
        fired = analysis.detect_anomalies(windows, threshold=threshold)
        if fired:
            xs = [(f.window.start + f.window.end) / 2 - t0 for f in fired]
            ys = [100 * f.window.rate for f in fired]
            ax.plot(xs, ys, linestyle="none", marker="v", color="black", label="alert fired")
    ax.set_ylim(0, 140)  # headroom for the legend above a 100% rate
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlim(edges[0], edges[-1])
    handles = ax.get_legend_handles_labels()[0] + extra
    ax.legend(handles=handles, loc="upper left", ncols=2, fontsize=8)
    return ax


def dashboard(
    attempts: Iterable[Attempt],
    *,
    transitions: Iterable[Any] | None = None,
    window: float | None = None,
    threshold: float | None = None,
    fig: Figure | None = None,
    max_tasks: int = 12,
) -> Figure:
    """A 2x2 overview for failed-task analysis: what fails, when, how often, and how retries go.

    The timeline (bottom right) shows the dead letters, the tasks that failed for good,
    with every attempt they made (or, if none gave up, the tasks that failed at least
    once). It shares its time axis with the failure-rate panel above it, so a dead
    letter lines up with the spike that caused it. Breaker `transitions` shade the
    failure-rate panel.
    """
    records = list(attempts)
    if fig is None:
        fig = plt.figure(figsize=(15, 9), layout="constrained")
    elif fig.get_layout_engine() is None:
        fig.set_layout_engine("constrained")
    axes = fig.subplots(2, 2)
    rate_ax, timeline_ax = axes[0, 1], axes[1, 1]
    timeline_ax.sharex(rate_ax)
    failure_distribution(records, ax=axes[0, 0])
    attempts_histogram(records, ax=axes[1, 0])
    origin = time_origin(records) if records else None  # one time zero for both time axes
    shown, title = _failed_tasks(records)
    retry_timeline(shown, ax=timeline_ax, max_tasks=max_tasks, origin=origin)
    timeline_range = timeline_ax.get_xlim()
    options: dict[str, Any] = {"window": window, "threshold": threshold, "transitions": transitions}
    failure_rate_over_time(records, ax=rate_ax, show_counts=False, **options)
    if records:
        (lo, hi), (tl_lo, tl_hi) = rate_ax.get_xlim(), timeline_range
        rate_ax.set_xlim(min(lo, tl_lo), max(hi, tl_hi))  # shared: sets both panels
        count = len({a.task_id for a in shown})
        if count > max_tasks:
            title += f" (first {max_tasks} of {count})"
        timeline_ax.set_title(title)
    fig.suptitle("sitq — failed task analysis", fontsize=14)
    return fig


def _failed_tasks(records: list[Attempt]) -> tuple[list[Attempt], str]:
    """The attempts the dashboard's timeline shows, and a title that says which tasks."""
    tasks = analysis.timelines(records)
    dead = [t for t in tasks if t.gave_up]
    if dead:
        title = f"Dead letters: the {len(dead)} tasks that failed for good, every attempt"
        return [a for t in dead for a in t.attempts], title
    retried = [t for t in tasks if any(analysis.is_failure(a) for a in t.attempts)]
    if retried:
        title = f"Tasks that failed at least once ({len(retried)}; none failed for good)"
        return [a for t in retried for a in t.attempts], title
    return records, "Retry timeline: one bar per attempt (no task failed)"
