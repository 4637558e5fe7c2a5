"""Plots of policies and timings: the circuit breaker's states over time, latency, and a
retry policy's planned waits. Same contract as `sitq.plots`: `f(data, *, ax=None) -> Axes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

try:
    from matplotlib.axes import Axes
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator
except ImportError as _missing:  # the core install has no plotting stack
    from sitq.errors import MissingExtraError

    raise MissingExtraError.needs("plots", "sitq.plots.policies", _missing) from _missing

from sitq import analysis
from sitq.plots.style import (
    BREAKER_COLORS,
    EDGE,
    SERIES_COLORS,
    new_axes,
    no_data,
    short,
)
from sitq.task import Attempt


def shade_breaker(ax: Axes, transitions: Iterable[Any], t0: float, end: float) -> list[Patch]:
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
    ax = new_axes(ax, "Circuit breaker state over time", xlabel, "breaker", size)
    if not items:
        return no_data(ax)
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
            ax.broken_barh([xrange], (row - 0.3, 0.6), facecolors=color, **EDGE)
        probes = [t.at - start for t in items if t.name == name and _is_probe(t, start, end)]
        if probes:
            ax.plot(probes, [row] * len(probes), linestyle="none", **_PROBE_STYLE)
    order = [s for s in BREAKER_COLORS if s in present] + sorted(present - set(BREAKER_COLORS))
    handles: list[Any] = [Patch(facecolor=BREAKER_COLORS.get(s, "0.8"), label=s) for s in order]
    if any(_is_probe(t, start, end) for t in items):
        handles.append(Line2D([], [], linestyle="none", label="probe (half open)", **_PROBE_STYLE))
    ax.legend(handles=handles, title="state", loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_yticks(range(len(names)), [short(str(n)) for n in names])
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
    ax = new_axes(ax, "Queue wait and run time", f"duration ({unit})", "frequency (count)")
    if not records:
        return no_data(ax)
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
    ax = new_axes(ax, title, xlabel, ylabel, (8, 4.5))
    if not any(series.values()):
        return no_data(ax)
    width = 0.8 / len(series)
    for i, (name, delays) in enumerate(series.items()):
        xs = [k + 1 - 0.4 + width * (i + 0.5) for k in range(len(delays))]
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        ax.bar(xs, delays, width, label=name, color=color, **EDGE)
    ax.set_xticks(range(1, n + 1))
    top = max(max(delays, default=0) for delays in series.values())
    ax.set_ylim(0, top * 1.35 or 1)  # headroom: the legend sits above the bars, not on them
    ax.legend(title="policy", loc="upper left", ncols=2, fontsize=8)
    return ax
