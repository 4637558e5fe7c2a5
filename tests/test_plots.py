"""sitq.plots: each view renders headless and draws what it promises (artists, not pixels)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure

from sitq import plots
from sitq.task import Attempt

T = 1_000.0
UNIT = re.compile(r"\(.+\)")  # "time since first enqueue (s)", "failure rate (%)"


def attempt(task_id, n, scheduled, start, finish, outcome, error_type=None, next_delay=None):
    names = {"a": "fetch", "b": "charge", "c": "email"}
    return Attempt(task_id, names.get(task_id, task_id), n, "w1", T + scheduled, T + start,
                   T + finish, outcome, error_type, error_type and "boom", next_delay)  # fmt: skip


def history() -> list[Attempt]:
    """A fails twice then succeeds (gaps 1 s, 2 s); B fails three times; C succeeds at once."""
    return [
        attempt("a", 1, 0, 0, 1, "retrying", "ConnectionError", 1.0),
        attempt("a", 2, 2, 2, 3, "retrying", "TimeoutError", 2.0),
        attempt("a", 3, 5, 5, 6, "succeeded"),
        attempt("b", 1, 0.5, 1, 1.5, "retrying", "ConnectionError", 1.0),
        attempt("b", 2, 2.5, 3, 3.5, "retrying", "ValueError", 1.0),
        attempt("b", 3, 4.5, 4.5, 5, "failed", "ConnectionError"),
        attempt("c", 1, 2, 2.5, 2.5, "succeeded"),  # zero duration, as on a FakeClock
    ]


@dataclass(frozen=True)
class Transition:
    """A stand-in for sitq.policy.breaker.BreakerTransition (states as plain strings)."""

    at: float
    name: str
    from_state: str
    to_state: str
    reason: str = ""


def transitions() -> list[Transition]:
    return [
        Transition(T + 1, "db", "closed", "open"),
        Transition(T + 3, "db", "open", "half_open"),
        Transition(T + 4, "db", "half_open", "closed"),
        Transition(T + 2, "smtp", "closed", "open"),
    ]


class Policy:
    """A stand-in retry policy: only `preview(n, seed=)` matters to the plot."""

    def __init__(self, delays: list[float | None]) -> None:
        self.delays = delays

    def preview(self, n: int, seed: int = 0) -> list[float | None]:
        return self.delays[:n]


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def render(ax: Axes, tmp_path: Path) -> Axes:
    """Draw to a PNG (so layout and tick labels are real) and check the frame."""
    ax.figure.savefig(tmp_path / "plot.png")
    assert ax.get_title()
    assert UNIT.search(ax.get_xlabel()), ax.get_xlabel()
    assert UNIT.search(ax.get_ylabel()) or ax.get_yticklabels(), ax.get_ylabel()
    return ax


def legend_labels(ax: Axes) -> list[str]:
    legend = ax.get_legend()
    return [t.get_text() for t in legend.get_texts()] if legend else []


def texts(ax: Axes) -> list[str]:
    return [t.get_text() for t in ax.texts]


def test_retry_timeline_draws_one_bar_per_attempt(tmp_path: Path) -> None:
    ax = render(plots.retry_timeline(history()), tmp_path)

    assert len(ax.patches) == 7
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert [t.split(" · ")[0] for t in ticks] == ["fetch", "charge", "email"]
    assert legend_labels(ax) == ["succeeded", "retrying", "failed"]
    assert "(s)" in ax.get_xlabel()


def test_retry_timeline_shows_gaps_and_labels_retries(tmp_path: Path) -> None:
    ax = render(plots.retry_timeline(history()), tmp_path)

    dashed = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert len(dashed) == 4  # two gaps each for A and B
    # B asked for 1 s before attempt 2 but waited 1.5 s for the worker: the label says both
    assert texts(ax) == ["try 2 +1s", "try 3 +2s", "try 2 +1.5s\n(backoff 1s)", "try 3 +1s"]


def test_retry_timeline_labels_the_gap_drawn_not_only_the_backoff(tmp_path: Path) -> None:
    # The policy asked for 0.5 s, but the retry started 30 s later (a breaker held it).
    held = [
        attempt("x", 1, 0, 0, 0, "retrying", "ConnectionError", 0.5),
        attempt("x", 2, 25, 30, 30, "succeeded"),
    ]
    ax = render(plots.retry_timeline(held), tmp_path)

    assert texts(ax) == ["try 2 +30s\n(backoff 0.5s)"]
    [gap] = [line for line in ax.lines if line.get_linestyle() == "--"]
    assert list(gap.get_xdata()) == [0, 30]  # the label's 30 s is the gap drawn


def test_retry_timeline_gap_labels_never_print_over_each_other(tmp_path: Path) -> None:
    # Eleven quick retries, 1.6 s apart, in a 20 s plot: each gap is wide enough for a
    # label on its own, but their labels are wider than the gaps. Every other one goes.
    quick = [
        attempt("q", n, 1.6 * (n - 1), 1.6 * (n - 1), 1.6 * (n - 1), "retrying", "E", 1.6)
        for n in range(1, 12)
    ] + [attempt("q", 12, 20, 20, 20, "succeeded")]
    ax = render(plots.retry_timeline(quick), tmp_path)

    renderer = ax.figure.canvas.get_renderer()  # type: ignore[attr-defined]
    boxes = sorted((t.get_window_extent(renderer) for t in ax.texts), key=lambda b: b.x0)
    assert 3 <= len(boxes) < 11  # some labelled, not all
    assert all(left.x1 <= right.x0 for left, right in pairwise(boxes))


def test_retry_timeline_keeps_instant_attempts_visible(tmp_path: Path) -> None:
    ax = render(plots.retry_timeline(history()), tmp_path)

    assert min(bar.get_width() for bar in ax.patches) > 0
    green = matplotlib.colors.to_rgba(plots.OUTCOME_COLORS["succeeded"])
    assert sum(bar.get_facecolor() == green for bar in ax.patches) == 2


def test_retry_timeline_limits_rows(tmp_path: Path) -> None:
    ax = render(plots.retry_timeline(history(), max_tasks=2), tmp_path)

    assert len(ax.patches) == 6
    assert "first 2 of 3 tasks" in ax.get_title()


def test_retry_timeline_labels_rows_by_name_numbered_never_by_id(tmp_path: Path) -> None:
    records = [
        Attempt("3f2a9c0d", "shop.pay:charge_card", 1, "w1", T, T, T, "succeeded"),
        Attempt("77b01e2a", "pkg.mod.fetch", 1, "w1", T + 1, T + 1, T + 1, "succeeded"),
        Attempt("90aa4c11", "shop.pay:charge_card", 1, "w1", T + 2, T + 2, T + 2, "succeeded"),
    ]
    ax = render(plots.retry_timeline(records), tmp_path)

    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["charge_card #1", "fetch", "charge_card #2"]


@pytest.mark.parametrize(
    "draw",
    [
        lambda: plots.retry_timeline(history()),
        lambda: plots.breaker_timeline(transitions()),
        lambda: plots.policy_preview({"fixed": Policy([1, 1]), "exponential": Policy([1, 2])}),
    ],
)
def test_a_new_figure_fits_its_labels_and_outside_legend(draw, tmp_path: Path) -> None:
    fig = render(draw(), tmp_path).figure
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches, everything drawn

    assert box.x0 >= 0 and box.y0 >= 0
    assert box.x1 <= fig.get_figwidth() and box.y1 <= fig.get_figheight()


def test_policy_preview_keeps_its_legend_above_the_bars(tmp_path: Path) -> None:
    ax = render(plots.policy_preview({"a": Policy([2, 4]), "b": Policy([4, 2])}), tmp_path)

    assert ax.get_ylim()[1] >= 1.3 * 4


def test_failure_distribution_from_attempts_or_counts(tmp_path: Path) -> None:
    ax = render(plots.failure_distribution(history()), tmp_path)

    assert [bar.get_width() for bar in ax.patches] == [3, 1, 1]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["ConnectionError", "TimeoutError", "ValueError"]
    assert texts(ax) == ["3", "1", "1"]  # the counts, written on the bars

    ax = render(plots.failure_distribution({"B": 1, "A": 4}), tmp_path)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["A", "B"]


def test_attempts_histogram_separates_tasks_that_gave_up(tmp_path: Path) -> None:
    ax = render(plots.attempts_histogram(history()), tmp_path)

    heights = [(bar.get_x() + bar.get_width() / 2, bar.get_height()) for bar in ax.patches]
    assert heights == [(1, 1), (3, 1), (4.5, 1)]  # C took 1, A took 3; B gave up
    assert [bar.get_hatch() for bar in ax.patches] == [None, None, "//"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3", "gave up"]
    assert legend_labels(ax) == ["succeeded after k attempts", "never succeeded (gave up)"]


def test_failure_rate_over_time_with_threshold_and_counts(tmp_path: Path) -> None:
    ax = render(plots.failure_rate_over_time(history(), window=2.0, threshold=0.5), tmp_path)

    [step] = [line for line in ax.lines if line.get_label() == "failure rate"]
    assert list(step.get_ydata()) == pytest.approx([100, 200 / 3, 100, 0, 0])
    assert ax.get_ylabel() == "failure rate (%)"
    assert legend_labels(ax) == [
        "failure rate",
        "alert threshold (50%)",
        "alert fired",
        "attempts per window",
    ]
    [twin] = [a for a in ax.figure.axes if a is not ax]
    assert [bar.get_height() for bar in twin.patches] == [2, 3, 1, 1]
    assert "(count)" in twin.get_ylabel()


def test_failure_rate_over_time_shades_open_breakers(tmp_path: Path) -> None:
    ax = plots.failure_rate_over_time(history(), window=2.0, transitions=transitions())
    render(ax, tmp_path)

    assert "breaker open" in legend_labels(ax)
    assert "breaker half_open" in legend_labels(ax)


def test_failure_rate_threshold_is_a_rate(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="threshold"):
        plots.failure_rate_over_time(history(), threshold=50)


def test_breaker_timeline_one_row_per_breaker(tmp_path: Path) -> None:
    ax = render(plots.breaker_timeline(transitions(), end=T + 6), tmp_path)

    spans = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(spans) == 3 + 2  # db: open, half_open, closed; smtp: closed, open
    assert [t.get_text() for t in ax.get_yticklabels()] == ["db", "smtp"]
    assert legend_labels(ax) == ["closed", "half_open", "open", "probe (half open)"]
    assert ax.get_xlim() == (0, 5)


def test_breaker_timeline_marks_every_probe(tmp_path: Path) -> None:
    # half open lasts an instant here: only the marker shows the probe at all
    instant = [
        Transition(T + 1, "db", "closed", "open"),
        Transition(T + 3, "db", "open", "half_open"),
        Transition(T + 3, "db", "half_open", "open"),
        Transition(T + 5, "db", "open", "half_open"),
        Transition(T + 5, "db", "half_open", "closed"),
    ]
    ax = render(plots.breaker_timeline(instant, end=T + 6), tmp_path)

    [probes] = [line for line in ax.lines if line.get_marker() == "D"]
    assert list(probes.get_xdata()) == [2, 4]  # seconds since the first transition
    assert list(probes.get_ydata()) == [0, 0]
    assert legend_labels(ax) == ["closed", "open", "probe (half open)"]


def test_breaker_timeline_without_probes_has_no_probe_legend(tmp_path: Path) -> None:
    opened = [Transition(T + 1, "db", "closed", "open")]
    ax = render(plots.breaker_timeline(opened, start=T), tmp_path)

    assert not [line for line in ax.lines if line.get_marker() == "D"]
    assert legend_labels(ax) == ["closed", "open"]


def test_latency_distribution_says_its_unit(tmp_path: Path) -> None:
    ax = render(plots.latency_distribution(history(), bins=5), tmp_path)

    assert ax.get_xlabel() == "duration (s)"
    assert len(ax.patches) == 2 * 5
    assert legend_labels(ax) == [
        "queue wait, first attempts (n=3)",
        "run time, all attempts (n=7)",
    ]
    fast = [attempt("x", 1, 0, 0.002, 0.010, "succeeded")]
    assert plots.latency_distribution(fast).get_xlabel() == "duration (ms)"


def test_policy_preview_groups_bars_by_retry(tmp_path: Path) -> None:
    policies = {
        "fixed": Policy([1, 1, 1]),
        "exponential": Policy([1, 2, 4]),
        "two": Policy([3, None]),
    }
    ax = render(plots.policy_preview(policies, n=3), tmp_path)

    assert len(ax.patches) == 3 + 3 + 1  # "two" gives up after one retry
    assert legend_labels(ax) == ["fixed", "exponential", "two"]
    assert [bar.get_height() for bar in ax.patches[3:6]] == [1, 2, 4]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "3"]


def test_dashboard_has_four_panels(tmp_path: Path) -> None:
    fig = plots.dashboard(history(), transitions=transitions(), threshold=0.5)
    fig.savefig(tmp_path / "dashboard.png")

    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4
    assert fig.get_suptitle() == "sitq — failed task analysis"
    assert all(ax.get_title() for ax in fig.axes)


def dashboard_timeline(fig: Figure) -> Axes:
    [ax] = [ax for ax in fig.axes if ax.get_ylabel() == "task"]
    return ax


def row_names(ax: Axes) -> list[str]:
    return [t.get_text().split(" #")[0] for t in ax.get_yticklabels()]


def test_dashboard_timeline_shows_the_dead_letters_every_attempt(tmp_path: Path) -> None:
    fig = plots.dashboard(history())
    fig.savefig(tmp_path / "dashboard.png")
    ax = dashboard_timeline(fig)

    assert row_names(ax) == ["charge"]  # B gave up; A failed twice but then succeeded
    assert len(ax.patches) == 3  # all three of B's attempts
    assert ax.get_title().startswith("Dead letters: the 1 tasks that failed for good")


def test_dashboard_timeline_says_when_it_shows_only_some_dead_letters(tmp_path: Path) -> None:
    dead = [attempt(f"t{i}", 1, i, i, i, "failed", "ValueError") for i in range(5)]
    fig = plots.dashboard(dead, max_tasks=3)
    fig.savefig(tmp_path / "dashboard.png")
    ax = dashboard_timeline(fig)

    assert len(ax.get_yticklabels()) == 3
    assert ax.get_title().endswith("(first 3 of 5)")


def test_dashboard_timeline_without_dead_letters_shows_retried_tasks(tmp_path: Path) -> None:
    survived = [a for a in history() if a.task_id != "b"]
    ax = dashboard_timeline(plots.dashboard(survived))

    assert row_names(ax) == ["fetch"]
    assert "none failed for good" in ax.get_title()


def test_dashboard_time_axes_are_shared(tmp_path: Path) -> None:
    fig = plots.dashboard(history(), window=2.0)
    fig.savefig(tmp_path / "dashboard.png")
    [rate] = [ax for ax in fig.axes if ax.get_ylabel() == "failure rate (%)"]
    timeline = dashboard_timeline(fig)

    assert rate.get_xlim() == timeline.get_xlim()
    assert rate.get_shared_x_axes().joined(rate, timeline)
    lo, hi = rate.get_xlim()
    assert lo <= 0 and hi >= 6  # every window and every bar fits


@pytest.mark.parametrize(
    "draw",
    [
        plots.retry_timeline,
        plots.failure_distribution,
        plots.attempts_histogram,
        plots.failure_rate_over_time,
        plots.breaker_timeline,
        plots.latency_distribution,
        lambda data: plots.policy_preview({}),
    ],
)
def test_empty_data_draws_an_empty_plot_saying_so(draw, tmp_path: Path) -> None:
    ax = render(draw([]), tmp_path)

    assert texts(ax) == ["no data"]


def test_empty_dashboard(tmp_path: Path) -> None:
    fig = plots.dashboard([])
    fig.savefig(tmp_path / "dashboard.png")

    assert len(fig.axes) == 4
    assert all(texts(ax) == ["no data"] for ax in fig.axes)


def test_plots_draw_on_a_given_axes(tmp_path: Path) -> None:
    _, ax = plt.subplots()

    assert plots.retry_timeline(history(), ax=ax) is ax
    assert plots.failure_distribution(history(), ax=ax) is ax
