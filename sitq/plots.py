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

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from sitq import analysis
from sitq.task import OUTCOMES, Attempt

#: One colour per outcome, shared by every plot so a colour means the same thing everywhere.
OUTCOME_COLORS: dict[str, str] = {
    "succeeded": "#2ca02c",  # green
    "retrying": "#ff7f0e",  # orange
    "failed": "#d62728",  # red
    "worker_lost": "#9467bd",  # purple
    "cancelled": "#7f7f7f",  # grey
}
#: Circuit-breaker states: closed lets calls through, open blocks them, half_open probes.
BREAKER_COLORS: dict[str, str] = {"closed": "#2ca02c", "half_open": "#ffbf00", "open": "#d62728"}
#: Colours for compared series (policies) that avoid the outcome colours' meanings.
SERIES_COLORS = ("#1f77b4", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79")
TIME_LABEL = "time since first enqueue (s)"
#: A thin outline keeps touching bars apart.
_EDGE: dict[str, Any] = {"edgecolor": "black", "linewidth": 0.5}


def _axes(ax: Axes | None, title: str, xlabel: str, ylabel: str, size: Any = None) -> Axes:
    """The given Axes (or a new figure's), with its title and axis labels set.

    A new figure uses the constrained layout, so long tick labels and a legend placed
    outside the axes fit inside the saved image instead of being cut off.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=size, layout="constrained")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return ax


def _no_data(ax: Axes) -> Axes:
    """Mark an empty plot: a blank frame alone looks like a bug."""
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
    return ax


def _origin(attempts: Iterable[Attempt]) -> float:
    """The earliest time in the data: the zero of every time axis."""
    return min(min(a.scheduled_for, a.started_at) for a in attempts)


def _outcome_order(outcome: str) -> tuple[int, str]:
    return (OUTCOMES.index(outcome) if outcome in OUTCOMES else len(OUTCOMES), outcome)


def _short(name: str, limit: int = 24) -> str:
    """A name cut to fit a tick label."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


#: The narrowest backoff gap (a fraction of the plot's time span) that gets a text label.
MIN_LABELLED_GAP = 0.07


def _task_label(task: analysis.TaskTimeline) -> str:
    """Row label "fetch · 3f2a9c" for task pkg.mod.fetch: the short id tells repeats apart."""
    name = task.task_name.replace(":", ".").rsplit(".", 1)[-1] or task.task_name
    return f"{_short(name)} · {task.task_id[:6]}"


def _gap_label(attempt: int, gap: float, backoff: float | None) -> str:
    """The gap drawn, "#3 +11.5s", over "(backoff 1.68s)" when the policy asked for less."""
    label = f"#{attempt} +{gap:.3g}s"
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

    Each retry is labelled "#k +Ds" above its gap: attempt number and the gap drawn (from
    the end of one attempt to the start of the next). When that gap is longer than the
    backoff the policy chose (an open breaker or busy workers held the retry), the label
    says both, on two lines: "#3 +11.5s" over "(backoff 1.68s)". Gaps narrower than
    MIN_LABELLED_GAP of the time span stay unlabelled, as their labels would print over
    each other. Bars have a minimum width (a small fraction of the time span) so instant
    attempts on a FakeClock stay visible.
    `origin` (epoch s, default the earliest time shown) is time zero: pass it to line up
    several plots.
    """
    tasks = analysis.timelines(attempts)
    shown = tasks[: max(max_tasks, 0)]
    title = "Retry timeline: one bar per attempt"
    if len(shown) < len(tasks):
        title += f" (first {len(shown)} of {len(tasks)} tasks)"
    size = (10, 1.6 + 0.5 * max(len(shown), 3))
    ax = _axes(ax, title, TIME_LABEL, "task (name · id)", size)
    if not shown:
        return _no_data(ax)
    records = [a for t in shown for a in t.attempts]
    t0 = _origin(records) if origin is None else origin
    span = max(a.finished_at for a in records) - t0 or 1.0
    bars: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for row, task in enumerate(shown):
        for i, (gap, a) in enumerate(zip(task.gaps, task.attempts[1:], strict=True)):
            prev = task.attempts[i]
            x0, x1 = prev.finished_at - t0, a.started_at - t0
            ax.plot([x0, x1], [row, row], linestyle="--", linewidth=1, color="0.45", zorder=0.5)
            if x1 - x0 < span * MIN_LABELLED_GAP:
                continue  # too narrow to label without overprinting its neighbours
            ax.annotate(
                _gap_label(a.attempt, gap, prev.next_delay),
                xy=((x0 + x1) / 2, row),
                fontsize=7,
                xytext=(0, 7),
                textcoords="offset points",
                ha="center",
                va="bottom",
            )
        for a in task.attempts:
            width = max(a.finished_at - a.started_at, span * 0.008)
            bars[a.outcome].append((row, a.started_at - t0, width))
    for outcome in sorted(bars, key=_outcome_order):
        rows, lefts, widths = zip(*bars[outcome], strict=True)
        color = OUTCOME_COLORS.get(outcome, "black")
        ax.barh(rows, widths, left=lefts, height=0.45, color=color, label=outcome, **_EDGE)
    ax.set_yticks(range(len(shown)), [_task_label(t) for t in shown])
    ax.set_ylim(len(shown) - 0.4, -0.7)  # first task on top, room for the labels
    ax.set_xlim(min(0.0, _origin(records) - t0) - 0.02 * span, 1.05 * span)
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
    ax = _axes(ax, "Failures by error type", "failed attempts (count)", "error type")
    if not counts:
        return _no_data(ax)
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
    ax = _axes(ax, "Attempts until success", "attempts per task (count)", "tasks (count)")
    if not took and not gave_up:
        return _no_data(ax)
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
    ax = _axes(ax, "Failure rate over time", TIME_LABEL, "failure rate (%)", (9, 4.5))
    if not records:
        return _no_data(ax)
    t0 = _origin(records)
    if window is None:
        window = _nice_window(max(a.finished_at for a in records) - t0)
    windows = analysis.failure_rate(records, window, start=t0)
    ax.set_title(f"Failure rate per {window:g} s window")
    edges = [w.start - t0 for w in windows] + [windows[-1].end - t0]
    rates = [100 * w.rate for w in windows]
    extra: list[Any] = []
    if transitions is not None:
        extra += _shade_breaker(ax, transitions, t0, windows[-1].end)
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


def _shade_breaker(ax: Axes, transitions: Iterable[Any], t0: float, end: float) -> list[Patch]:
    """Shade spans where a breaker was not closed; return legend handles for them."""
    items = list(transitions)
    states = set()
    for name in dict.fromkeys(t.name for t in items):
        for span in analysis.breaker_states(items, start=t0, end=end, name=name):
            if span.state != "closed":
                color = BREAKER_COLORS.get(span.state, "0.8")
                ax.axvspan(span.start - t0, span.end - t0, color=color, alpha=0.2, lw=0)
                states.add(span.state)
    return [
        Patch(color=BREAKER_COLORS.get(s, "0.8"), alpha=0.2, label=f"breaker {s}")
        for s in sorted(states)
    ]


#: How a probe (a move to half open) is drawn on a breaker timeline.
_PROBE_STYLE: dict[str, Any] = {
    "marker": "D",
    "markersize": 7,
    "markerfacecolor": BREAKER_COLORS["half_open"],
    "markeredgecolor": "black",
    "zorder": 3,
}


def _is_probe(transition: Any, start: float, end: float) -> bool:
    """True for a move to half open inside [start, end]: the moment a probe call is let in."""
    return str(transition.to_state) == "half_open" and start <= transition.at <= end


def breaker_timeline(
    transitions: Iterable[Any],
    *,
    start: float | None = None,
    end: float | None = None,
    ax: Axes | None = None,
) -> Axes:
    """Each breaker's state over time as coloured spans, one row per breaker name.

    A diamond marks every probe (a move to half open, when one call is let through):
    half open often lasts an instant, so its span alone would be invisible. The span
    after a diamond tells how the probe went (red: failed, the breaker opened again;
    green: it closed). Without `end` the plot runs a little past the last transition so
    the final state shows. Times are seconds since `start` (default: the first transition).
    """
    items = sorted(transitions, key=lambda t: t.at)
    names = list(dict.fromkeys(t.name for t in items))
    xlabel = f"time since {'first transition' if start is None else 'start'} (s)"
    size = (9, 1.6 + 0.5 * max(len(names), 2))
    ax = _axes(ax, "Circuit breaker state over time", xlabel, "breaker", size)
    if not items:
        return _no_data(ax)
    start = items[0].at if start is None else start
    if end is None:
        end = items[-1].at + max(0.1 * (items[-1].at - start), 1.0)
    present: set[str] = set()
    for row, name in enumerate(names):
        spans = analysis.breaker_states(items, start=start, end=end, name=name)
        for span in spans:
            present.add(span.state)
            color = BREAKER_COLORS.get(span.state, "0.8")
            xrange = (span.start - start, span.end - span.start)
            ax.broken_barh([xrange], (row - 0.3, 0.6), facecolors=color, **_EDGE)
        probes = [t.at - start for t in items if t.name == name and _is_probe(t, start, end)]
        if probes:
            ax.plot(probes, [row] * len(probes), linestyle="none", **_PROBE_STYLE)
    order = [s for s in BREAKER_COLORS if s in present] + sorted(present - set(BREAKER_COLORS))
    handles: list[Any] = [Patch(facecolor=BREAKER_COLORS.get(s, "0.8"), label=s) for s in order]
    if any(_is_probe(t, start, end) for t in items):
        handles.append(Line2D([], [], linestyle="none", label="probe (half open)", **_PROBE_STYLE))
    ax.legend(handles=handles, title="state", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_yticks(range(len(names)), [_short(str(n)) for n in names])
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlim(0, end - start)
    return ax


def latency_distribution(
    attempts: Iterable[Attempt], *, ax: Axes | None = None, bins: int = 20
) -> Axes:
    """Histograms of queue wait (first attempts) and run time (all attempts), shared bins.

    Shown in milliseconds when everything is under a second, else in seconds.
    """
    records = list(attempts)
    waits, runs = analysis.queue_waits(records), analysis.run_durations(records)
    scale, unit = (1000.0, "ms") if max([*waits, *runs], default=0) < 1 else (1.0, "s")
    ax = _axes(ax, "Queue wait and run time", f"duration ({unit})", "frequency (count)")
    if not records:
        return _no_data(ax)
    values = [v * scale for v in [*waits, *runs]]
    lo, hi = min(values), max(values)
    if hi == lo:  # e.g. a FakeClock: no time passes while a task runs
        lo, hi, bins = lo - 0.5, lo + 0.5, bins | 1  # an odd count centres the one bar
        note = f"every value is {values[0]:g} {unit}"
        ax.text(0.97, 0.6, note, transform=ax.transAxes, ha="right", color="0.3")
    edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
    for data, color, label in (
        (waits, "#1f77b4", f"queue wait, first attempts (n={len(waits)})"),
        (runs, "#8c564b", f"run time, all attempts (n={len(runs)})"),
    ):
        if data:
            scaled = [v * scale for v in data]
            ax.hist(scaled, bins=edges, color=color, alpha=0.55, edgecolor=color, label=label)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    return ax


def policy_preview(
    policies: Mapping[str, Any], *, n: int = 5, seed: int = 0, ax: Axes | None = None
) -> Axes:
    """Grouped bars of the delay before retry k (k = 1..n) for each named retry policy.

    Each policy's `preview(n, seed=seed)` gives its delays in seconds; a policy that
    gives up sooner returns fewer (a None ends the list). The same seed gives the same
    jitter, so the comparison is reproducible.
    """
    series: dict[str, list[float]] = {}
    for name, policy in policies.items():
        delays = list(policy.preview(n, seed=seed))[:n]
        cut = delays.index(None) if None in delays else len(delays)
        series[name] = [float(d) for d in delays[:cut]]
    title = f"Delay before each retry, by policy (seed={seed})"
    xlabel, ylabel = "retry number (1 = first retry)", "delay before retry (s)"
    ax = _axes(ax, title, xlabel, ylabel, (8, 4.5))
    if not any(series.values()):
        return _no_data(ax)
    width = 0.8 / len(series)
    for i, (name, delays) in enumerate(series.items()):
        xs = [k + 1 - 0.4 + width * (i + 0.5) for k in range(len(delays))]
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        ax.bar(xs, delays, width, label=name, color=color, **_EDGE)
    ax.set_xticks(range(1, n + 1))
    top = max(max(delays, default=0) for delays in series.values())
    ax.set_ylim(0, top * 1.35 or 1)  # headroom: the legend sits above the bars, not on them
    ax.legend(title="policy", loc="upper left", ncols=2, fontsize=8)
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
    origin = _origin(records) if records else None  # one time zero for both time axes
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
