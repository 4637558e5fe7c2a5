"""Lesson 11's chunk timeline and lesson 15's scaling figure, checked for what does not vary.

Both lessons draw real timings, so their pictures are never compared with a baseline
(`figure-varies`). What must hold on every run: for the timeline, one row per thread or
process, numbered in order of first start, every chunk drawn exactly once, in its
runner's row, in start order, and a span recorded in a worker process comes back with that
process's pid; for the scaling figure, one line per backend, points in process order.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from sitq.teaching.lessons import Drain
from sitq.teaching.scaling import drain_rates
from sitq.teaching.spans import Span, chunk_timeline, rows


def span(chunk: int, runner: int, started: float, finished: float) -> Span:
    return Span(
        chunk=chunk,
        pid=1000 + runner,
        thread=f"sitq-task_{runner}",
        started=started,
        finished=finished,
        cpu=0.0,
    )


#: Given out of order: runner 7 starts first, runner 3 second, runner 5 last.
SPANS = [
    span(4, 3, 1.5, 2.0),
    span(1, 7, 1.0, 1.4),
    span(2, 3, 1.1, 1.5),
    span(5, 5, 2.5, 3.0),
    span(3, 7, 1.4, 2.2),
]


@pytest.mark.parametrize("by", ["thread", "process"])
def test_rows_number_runners_by_first_start_and_keep_each_chunk_once(by: str) -> None:
    grouped = rows(SPANS, by)
    assert [[s.chunk for s in row] for row in grouped] == [[1, 3], [2, 4], [5]]


def test_rows_refuse_an_unknown_grouping() -> None:
    with pytest.raises(ValueError, match="'thread' or 'process'"):
        rows(SPANS, "core")


def test_the_timeline_draws_one_row_per_runner_and_every_chunk_once_in_start_order() -> None:
    figure = chunk_timeline({"threads": ("thread", SPANS), "processes": ("process", SPANS[:2])})
    try:
        threads, processes = figure.axes
        labels = [t.get_text() for t in threads.get_yticklabels()]
        assert labels == ["thread 1", "thread 2", "thread 3"]
        assert [t.get_text() for t in processes.get_yticklabels()] == ["process 1", "process 2"]
        bars = threads.patches
        drawn = [(b.get_y() + b.get_height() / 2, b.get_x(), b.get_width()) for b in bars]
        # (row, start since the first chunk, length), in start order within each row
        expected = [(0, 0.0, 0.4), (0, 0.4, 0.8), (1, 0.1, 0.4), (1, 0.5, 0.5), (2, 1.5, 0.5)]
        assert [pytest.approx(bar) for bar in drawn] == expected
        assert [t.get_text() for t in threads.texts] == ["1", "3", "2", "4", "5"]
        assert threads.get_title() == "threads"
    finally:
        plt.close(figure)


def test_a_span_recorded_in_another_process_comes_back_with_its_pid() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        recorded = pool.submit(Span.since, 3, time.time(), time.thread_time()).result()
    assert recorded.chunk == 3
    assert recorded.pid != os.getpid()
    assert recorded.started <= recorded.finished


def drain(count: int, seconds: float) -> Drain:
    return Drain(
        count=count,
        tasks=100,
        seconds=seconds,
        statuses=Counter(succeeded=100),
        runs=Counter(range(100)),
        per_process=Counter(),
    )


def test_the_scaling_figure_draws_one_line_per_backend_in_process_order() -> None:
    """Lesson 15: points sorted by process count, y = tasks/s, the y axis from zero."""
    sqlite = [drain(4, 0.5), drain(1, 1.0), drain(2, 0.25)]
    ax = drain_rates({"SQLite": sqlite, "PostgreSQL": [drain(1, 2.0), drain(4, 1.0)]})
    try:
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines) == ["SQLite", "PostgreSQL"]
        assert list(lines["SQLite"].get_xdata()) == [1, 2, 4]
        assert list(lines["SQLite"].get_ydata()) == [100.0, 400.0, 200.0]
        assert list(lines["PostgreSQL"].get_ydata()) == [50.0, 100.0]
        assert list(ax.get_xticks()) == [1, 2, 4]
        assert ax.get_ylim()[0] == 0
    finally:
        plt.close(ax.figure)
