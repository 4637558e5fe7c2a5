"""Who ran which chunk, and when: spans recorded by the tasks, drawn as a timeline.

Lesson 11 runs the same CPU-bound chunks in threads and in processes. A single total time
says *that* one was faster; a timeline says *why*: under the GIL the threads' bars overlap
and each stretches (they take turns on one core), while two processes' bars sit side by
side at full speed. The task records its own span (the queue only sees when a task was
claimed and settled, not when a process actually began computing), and returns it, so the
span crosses back from a process like any other result.

Times are wall-clock (`time.time()`): the one clock that means the same in every process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from sitq.plots.style import EDGE, SERIES_COLORS

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Span:
    """One chunk's run: which chunk, which process and thread, from when to when, and the
    CPU seconds its thread used meanwhile (at most the wall seconds: one thread, one core)."""

    chunk: int
    pid: int
    thread: str
    started: float
    finished: float
    cpu: float

    @classmethod
    def since(cls, chunk: int, started: float, cpu_started: float) -> Span:
        """The span of `chunk` from `started` (`time.time()`) and `cpu_started`
        (`time.thread_time()`) until now, in this process and thread."""
        return cls(
            chunk=chunk,
            pid=os.getpid(),
            thread=threading.current_thread().name,
            started=started,
            finished=time.time(),
            cpu=time.thread_time() - cpu_started,
        )


def rows(spans: Sequence[Span], by: str) -> list[list[Span]]:
    """The spans grouped into one row per runner, rows and spans in order of start.

    `by` is "thread" (who ran it inside one process) or "process" (which pid). Rows are
    numbered by when their runner first started, so labels such as "thread 1" mean the
    same on every run although thread names and pids do not.
    """
    if by not in ("thread", "process"):
        raise ValueError(f"by={by!r}: choose 'thread' or 'process'")
    grouped: dict[object, list[Span]] = {}
    for span in sorted(spans, key=lambda s: (s.started, s.chunk)):
        key = span.thread if by == "thread" else span.pid
        grouped.setdefault(key, []).append(span)
    return list(grouped.values())


def chunk_timeline(runs: Mapping[str, tuple[str, Sequence[Span]]]) -> Figure:
    """One panel per run, one row per thread or process, one bar per chunk (numbered).

    `runs` maps a panel title to (`by`, spans), with `by` as in `rows`. Each panel's time
    zero is its own first start, and the panels share the time axis, so equal lengths
    mean equal seconds.
    """
    grouped = {title: (by, rows(spans, by)) for title, (by, spans) in runs.items()}
    heights = [max(len(r), 1) + 1 for _, r in grouped.values()]
    figure, axes = plt.subplots(
        len(runs),
        1,
        sharex=True,
        squeeze=False,
        figsize=(9, 1.2 + 0.45 * sum(heights)),
        layout="constrained",
        gridspec_kw={"height_ratios": heights},
    )
    for ax, (title, (by, runners)), color in zip(
        axes[:, 0], grouped.items(), SERIES_COLORS, strict=False
    ):
        _draw_rows(ax, title, by, runners, color)
    axes[-1, 0].set_xlabel("seconds since the run's first task started")
    return figure


def _draw_rows(ax: Axes, title: str, by: str, runners: list[list[Span]], color: str) -> None:
    t0 = min((s.started for row in runners for s in row), default=0.0)
    for y, row in enumerate(runners):
        for s in row:
            ax.barh(y, s.finished - s.started, left=s.started - t0, height=0.6, color=color, **EDGE)
            middle = (s.started + s.finished) / 2 - t0
            ax.text(middle, y, str(s.chunk), ha="center", va="center", fontsize=8, color="white")
    ax.set_yticks(range(len(runners)), [f"{by} {i + 1}" for i in range(len(runners))])
    ax.set_ylim(len(runners) - 0.4, -0.6)  # first runner on top
    ax.set_title(title)
