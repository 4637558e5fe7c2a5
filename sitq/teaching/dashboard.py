"""Checker for exercises/12_monitoring's third exercise: a dashboard for failed-task analysis.

Titles and labels are easy to check, and easy to fake: panels of made-up numbers, or of
lines with no points at all, look like a dashboard. So the checker also builds the
dashboard from a second, different history, and compares what each panel drew: a panel
that draws the same numbers whatever the history is not showing the history. And it
compares the panels with each other: one view drawn three times under three titles is a
single panel, however different the titles are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

try:
    import numpy as np
except ImportError as _missing:  # the core install has no plotting stack
    from sitq.errors import MissingExtraError

    _what = "sitq.teaching's dashboard checker"
    raise MissingExtraError.needs("plots", _what, _missing) from _missing

from sitq.task import Attempt
from sitq.teaching import Feedback, attempt, not_yet, passed
from sitq.teaching.datasets import example_history

DASHBOARD_HINT = (
    "fig, axes = plt.subplots(2, 2, figsize=(12, 8)); draw one view per Axes (e.g. "
    "plots.failure_distribution(history, ax=axes[0, 0])), give each a title and axis "
    "labels, and return fig"
)
FROM_HISTORY_HINT = (
    "compute what you draw from the `history` argument (e.g. count its failed attempts per "
    "error type, or pass it to a sitq.plots view with ax=), not from numbers you typed in "
    "or from a variable outside the function"
)

#: The second history the dashboard is built from: another seed, fewer tasks.
OTHER_HISTORY = {"seed": 1, "tasks": 80}


def check_dashboard(build_dashboard: Callable[[list[Attempt]], Any]) -> Feedback:
    """Exercise 3: `build_dashboard(history)` returns a Figure with >= 3 labelled panels,
    each drawing data that comes from the history.

    The figure for example_history() is left open, so a notebook shows it below the
    verdict: the student sees what was judged.
    """
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    def check() -> Feedback:
        fig = build_dashboard(example_history())
        if isinstance(fig, Axes):
            return not_yet("you returned one Axes (one panel), not the Figure", DASHBOARD_HINT)
        if not isinstance(fig, Figure):
            return not_yet(f"you returned {type(fig).__name__}, not a Figure", DASHBOARD_HINT)
        panels = _panels(fig)
        if (problem := _judge_panels(panels)) is not None:
            return problem
        if (problem := _judge_copies(panels)) is not None:
            return problem
        other = _drawn_from(build_dashboard, fig)
        for k, group in enumerate(panels):
            if other is not None and len(other) == len(panels) and _same(_data(group), other[k]):
                return not_yet(
                    f"panel {_title(group)!r} draws the same numbers whatever the history: "
                    "built from another history, it looked exactly the same",
                    FROM_HISTORY_HINT,
                )
        return passed(
            f"{len(panels)} labelled panels drawn from the history: "
            + "; ".join(_title(group) for group in panels)
        )

    return attempt(check, hint=DASHBOARD_HINT)


def _drawn_from(build_dashboard: Callable[[list[Attempt]], Any], shown: Any) -> list[Any] | None:
    """What each panel draws when the dashboard is built from OTHER_HISTORY (None: no Figure)."""
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    fig = build_dashboard(example_history(**OTHER_HISTORY))
    if not isinstance(fig, Figure):
        return None
    drawn = [_data(group) for group in _panels(fig)]
    if fig is not shown:
        plt.close(fig)
    return drawn


def _panels(fig: Any) -> list[list[Any]]:
    """The figure's Axes grouped by position (a twin axis shares its panel); no colorbars."""
    groups: dict[tuple[float, ...], list[Any]] = {}
    for ax in fig.axes:
        if getattr(ax, "_colorbar", None) is not None or not ax.get_visible():
            continue
        key = tuple(round(v, 3) for v in ax.get_position().bounds)
        groups.setdefault(key, []).append(ax)
    return list(groups.values())


def _title(group: list[Any]) -> str:
    return next((ax.get_title() for ax in group if ax.get_title()), "")


def _judge_panels(panels: list[list[Any]]) -> Feedback | None:
    """None if there are 3+ panels, each titled, labelled and showing some data."""
    if len(panels) < 3:
        found = f"your figure has {len(panels)} panel(s); a dashboard needs at least 3"
        return not_yet(found, DASHBOARD_HINT)
    titles = []
    for k, group in enumerate(panels, 1):
        title = _title(group)
        xlabel = next((ax.get_xlabel() for ax in group if ax.get_xlabel()), "")
        ylabel = next((ax.get_ylabel() for ax in group if ax.get_ylabel()), "")
        if not title:
            return not_yet(f"panel {k} has no title", "ax.set_title('what this panel shows')")
        if not (xlabel and ylabel):
            return not_yet(
                f"panel {title!r} lacks an {'x' if not xlabel else 'y'} axis label",
                "label both axes, with units: ax.set(xlabel='time (s)', ylabel='failures (count)')",
            )
        if not _shows_something(group):
            return not_yet(
                f"panel {title!r} is empty: nothing on it has a single data point",
                "draw something from the history on every panel (a line needs points, a bar "
                "a height)",
            )
        titles.append(title)
    if len(set(titles)) < len(titles):
        return not_yet("two panels have the same title", "each panel answers its own question")
    return None


def _judge_copies(panels: list[list[Any]]) -> Feedback | None:
    """None unless two panels draw the very same numbers (one view under two titles)."""
    drawn = [_data(group) for group in panels]
    for k, one in enumerate(drawn):
        for j in range(k + 1, len(drawn)):
            if _same(one, drawn[j]):
                return not_yet(
                    f"panels {_title(panels[k])!r} and {_title(panels[j])!r} draw the same "
                    "numbers: it is one view under two titles",
                    "each panel shows its own data, answering its own question: e.g. failures "
                    "by error type, the failure rate over time, attempts per task",
                )
    return None


# --- what a panel draws, as numbers ------------------------------------------------------


def _data(group: list[Any]) -> list[np.ndarray]:
    """Every shape drawn on a panel's Axes, as an (n, 2) array of points: the points of a
    line, the outline of a patch (a bar, a wedge), the points of a scatter, the outlines
    of other collections (fill_between, hlines), an image's pixels."""
    shapes = []
    for ax in group:
        shapes += [line.get_xydata() for line in ax.lines]
        shapes += [p.get_patch_transform().transform(p.get_path().vertices) for p in ax.patches]
        shapes += [np.ma.filled(image.get_array(), np.nan).reshape(-1, 1) for image in ax.images]
    shapes += _collection_shapes(group)
    return [np.asarray(shape, dtype=float).reshape(len(shape), -1) for shape in shapes]


def _collection_shapes(group: list[Any]) -> list[Any]:
    """The points of scatters (their offsets) and the outlines of other collections."""
    from matplotlib.collections import PathCollection

    shapes = []
    for ax in group:
        for collection in ax.collections:
            if isinstance(collection, PathCollection):  # a scatter: its points are the offsets
                shapes.append(collection.get_offsets())
            else:
                shapes += [path.vertices for path in collection.get_paths()]
    return shapes


def _shows_something(group: list[Any]) -> bool:
    """True if a panel shows at least one data point: a finite point on a line or in a
    collection, a patch of non-zero size (a bar of height 0 is drawn, but shows nothing),
    or an image."""
    for ax in group:
        outlines = [p.get_patch_transform().transform(p.get_path().vertices) for p in ax.patches]
        if any(_finite(o).size and np.ptp(_finite(o), axis=0).min() > 0 for o in outlines):
            return True
        if any(_finite(line.get_xydata()).size for line in ax.lines) or ax.images:
            return True
    return any(_finite(shape).size for shape in _collection_shapes(group))


def _finite(points: Any) -> np.ndarray:
    """The rows of an (n, 2) array of points with both coordinates finite."""
    array = np.asarray(points, dtype=float).reshape(-1, 2)
    return array[np.all(np.isfinite(array), axis=1)]


def _same(drawn: list[np.ndarray], other: list[np.ndarray]) -> bool:
    return len(drawn) == len(other) and all(
        a.shape == b.shape and np.allclose(a, b, equal_nan=True, rtol=0, atol=1e-9)
        for a, b in zip(drawn, other, strict=True)
    )
