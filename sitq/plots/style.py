"""What every sitq plot shares: colours that mean the same thing everywhere, and small
helpers for axes, empty plots and time origins."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

try:
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes
except ImportError as _missing:  # the core install has no plotting stack
    from sitq.errors import MissingExtraError

    raise MissingExtraError.needs("plots", "sitq.plots", _missing) from _missing

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
EDGE: dict[str, Any] = {"edgecolor": "black", "linewidth": 0.5}


def new_axes(ax: Axes | None, title: str, xlabel: str, ylabel: str, size: Any = None) -> Axes:
    """The given Axes (or a new figure's), with its title and axis labels set.

    A new figure uses the constrained layout, so long tick labels and a legend placed
    outside the axes fit inside the saved image instead of being cut off.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=size, layout="constrained")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return ax


def no_data(ax: Axes) -> Axes:
    """Mark an empty plot: a blank frame alone looks like a bug."""
    ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.5")
    return ax


def time_origin(attempts: Iterable[Attempt]) -> float:
    """The earliest time in the data: the zero of every time axis."""
    return min(min(a.scheduled_for, a.started_at) for a in attempts)


def outcome_order(outcome: str) -> tuple[int, str]:
    return (OUTCOMES.index(outcome) if outcome in OUTCOMES else len(OUTCOMES), outcome)


def short(name: str, limit: int = 24) -> str:
    """A name cut to fit a tick label."""
    return name if len(name) <= limit else name[: limit - 1] + "…"
