"""Lesson 15's figure: tasks per second against worker processes, one line per backend.

Printed rates for 1, 2 and 4 processes are easy to misread; a line that climbs, flattens
or falls says at a glance whether more processes helped. Each point is one `Drain` of
`sitq.teaching.lessons`, a real measurement, so the lines differ on every run: the test
checks the shape (one line per backend, one point per measurement, in process order).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from sitq.plots.style import SERIES_COLORS, new_axes
from sitq.teaching.lessons import Drain

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def drain_rates(series: Mapping[str, Sequence[Drain]], *, ax: Axes | None = None) -> Axes:
    """One line per backend: tasks/s (y, from 0) against worker processes (x), marked."""
    ax = new_axes(ax, "Draining short tasks", "worker processes", "tasks per second", (7, 4))
    counts: set[int] = set()
    for (name, drains), color in zip(series.items(), SERIES_COLORS, strict=False):
        ordered = sorted(drains, key=lambda d: d.count)
        xs = [d.count for d in ordered]
        ax.plot(xs, [d.tasks / d.seconds for d in ordered], marker="o", color=color, label=name)
        counts.update(xs)
    ax.set_xticks(sorted(counts))
    ax.set_ylim(bottom=0)  # from zero, so a small difference does not look like a large one
    ax.legend(title="backend")
    return ax
