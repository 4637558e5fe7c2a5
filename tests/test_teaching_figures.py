"""The lessons' figure helpers: what their real-timing pictures show, whatever the timings.

Lessons 03, 09, 10 and 14 draw from real clocks, so their images are not compared with
baselines (tests/test_figures.py runs them only). What must not vary is checked here on
the drawn Axes: one row per task or worker, every run drawn once, rows and bars in order,
readable labels.
"""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest
from matplotlib.axes import Axes
from matplotlib.patches import Rectangle

from sitq.task import Attempt
from sitq.teaching import figures


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def run(
    task: str,
    worker: str,
    start: float,
    end: float,
    outcome: str = "succeeded",
    attempt: int = 1,
    name: str = "shop.tasks:resize_image",
) -> Attempt:
    """One attempt record, as `queue.history` returns it."""
    return Attempt(
        task_id=task,
        task_name=name,
        attempt=attempt,
        worker_id=worker,
        scheduled_for=0.0,
        started_at=start,
        finished_at=end,
        outcome=outcome,
    )


def bars(ax: Axes) -> list[tuple[float, float, float]]:
    """(row, left, width) of every bar drawn, in drawing order."""
    return [
        (p.get_y() + p.get_height() / 2, p.get_x(), p.get_width())
        for p in ax.patches
        if isinstance(p, Rectangle)
    ]


def test_task_spans_one_row_per_task_each_group_from_its_own_start() -> None:
    blocked = [(10.2, 10.3), (10.0, 10.1), (10.1, 10.2)]  # recorded out of order
    ax = figures.task_spans({"asyncio.sleep": [(5.0, 5.1)] * 3, "time.sleep": blocked})

    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [f"{g} · task {k}" for g in ("asyncio.sleep", "time.sleep") for k in (1, 2, 3)]
    drawn = bars(ax)
    assert [row for row, _, _ in drawn] == [0, 1, 2, 3, 4, 5]
    assert [round(left, 6) for _, left, _ in drawn] == [0, 0, 0, 0, 0.1, 0.2]  # a staircase


def test_worker_timeline_one_row_per_worker_every_run_once_in_order() -> None:
    history = [
        run("a", "worker-2", 101.0, 102.0, name="shop.tasks:charge_card"),
        run("b", "worker-1", 100.0, 101.0, name="shop.tasks:send_email"),
        run("c", "worker-1", 101.0, 103.0, outcome="worker_lost"),
        run("c", "worker-2", 104.0, 105.0, attempt=2),
    ]
    ax = figures.worker_timeline(history, marks={"worker killed": 103.0})

    assert [t.get_text() for t in ax.get_yticklabels()] == ["worker-1", "worker-2"]
    drawn = bars(ax)
    assert drawn == [(0, 0.0, 1.0), (0, 1.0, 2.0), (1, 1.0, 1.0), (1, 4.0, 1.0)]
    texts = [t.get_text() for t in ax.texts]
    assert texts[:4] == ["send_email", "resize_image", "charge_card", "resize_image (try 2)"]
    assert "worker killed" in texts
    assert not any(len(t) > 30 or "shop.tasks" in t for t in texts)  # names, not ids or paths
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["succeeded", "worker_lost"]


def test_worker_timeline_labels_replace_task_names() -> None:
    ax = figures.worker_timeline([run("a", "w", 0.0, 1.0)], labels={"a": "order 7"})
    assert ax.texts[0].get_text() == "order 7"


def test_worker_rows_orders_workers_by_first_start_and_runs_by_start() -> None:
    history = [run("x", "w2", 3.0, 4.0), run("y", "w1", 2.0, 3.0), run("z", "w2", 1.0, 2.0)]
    rows = figures.worker_rows(history)
    assert list(rows) == ["w2", "w1"]
    assert [a.task_id for a in rows["w2"]] == ["z", "x"]


def test_rate_by_chunk_one_labelled_point_per_size_in_size_order() -> None:
    ax = figures.rate_by_chunk({100: 9000.0, 1: 300.0, 10: 2500.0})
    [line] = ax.get_lines()
    assert list(line.get_xdata()) == [1, 10, 100]
    assert list(line.get_ydata()) == [300.0, 2500.0, 9000.0]
    assert [t.get_text() for t in ax.texts] == ["300/s", "2,500/s", "9,000/s"]
    assert (ax.get_xscale(), ax.get_ylim()[0]) == ("log", 0)


def test_empty_data_says_so() -> None:
    for ax in (figures.worker_timeline([]), figures.task_spans({}), figures.rate_by_chunk({})):
        assert [t.get_text() for t in ax.texts] == ["no data"]


def test_runs_that_overlap_on_one_worker_stack_in_lanes_inside_its_row() -> None:
    history = [run("a", "w", 0, 2), run("b", "w", 1, 3), run("c", "w", 2, 4), run("d", "v", 1, 2)]
    ax = figures.worker_timeline(history)

    assert [row for row, _, _ in bars(ax)] == [0, 1, 0, 2]  # c reuses a's lane once a ended
    assert list(ax.get_yticks()) == [0.5, 2.0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["w", "v"]


def test_a_killed_workers_run_is_cut_at_the_kill_and_hatched_to_the_lease_expiry() -> None:
    history = [
        run("t", "host-1-pid-7", 10.0, 12.0, "worker_lost", name="make_thumbnail"),
        run("t", "host-1-pid-9", 12.5, 12.6, attempt=2, name="make_thumbnail"),
    ]
    ax = figures.worker_timeline(
        history,
        workers={"host-1-pid-7": "worker A", "host-1-pid-9": "worker B"},
        killed={"host-1-pid-7": 10.5},
        marks={"A killed": 10.5, "lease expired": 12.0},
    )

    drawn = [(row, round(left, 6), round(width, 6)) for row, left, width in bars(ax)]
    assert drawn == [(0, 0.0, 0.5), (0, 0.5, 1.5), (1, 2.5, 0.1)]
    assert [p.get_hatch() for p in ax.patches] == [None, "///", None]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["worker A", "worker B"]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["make_thumbnail", "make_thumbnail (try 2)", "A killed", "lease expired"]
