"""Lesson 17's plumbing and figures: workers stepping one FakeClock, ticks and rate windows.

Lesson 17 runs a day of periodic ticks and a burst of rate-limited starts on a FakeClock,
so its pictures are exact and compared with baselines (tests/test_figures.py). The cells
keep the idea (a schedule, a limit); stepping the workers and drawing live here.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from matplotlib.axes import Axes
from matplotlib.lines import Line2D

from sitq.clock import FakeClock
from sitq.plots.style import EDGE, SERIES_COLORS, new_axes, no_data
from sitq.task import Attempt
from sitq.views.html import short_task_name

if TYPE_CHECKING:
    from sitq.engine.queue import TaskQueue
    from sitq.engine.worker import Worker

HOUR = 3600.0


async def step_together(
    clock: FakeClock, workers: Sequence[Worker], *, step: float, until: float, seed: int = 0
) -> Counter[str]:
    """Advance the shared clock by `step` up to `until`; after each step every worker takes
    one turn (`run_once`), in an order drawn from a seeded generator. Returns how many tasks
    each worker ran, by worker id.

    Why not `run_until_idle(until=...)` on each worker? It jumps the clock to the next due
    task, and with one clock shared, a worker jumping it while another runs a task would
    expire that task's lease. Stepping keeps them in step, as real time does. Whoever looks
    first at a tick fires it and runs it; the other finds it fired (by the database's
    unique key per schedule and tick) and finds nothing to do. The seeded order makes the
    lesson's picture the same on every run while both workers get their turns first.
    """
    rng = random.Random(seed)
    ran: Counter[str] = Counter({worker.worker_id: 0 for worker in workers})
    while clock.now() + step <= until + 1e-9:
        clock.advance(step)
        for worker in rng.sample(list(workers), len(workers)):
            ran[worker.worker_id] += await worker.run_once()
    return ran


def draw_ticks(history: Iterable[Attempt], start: float, *, ax: Axes | None = None) -> Axes:
    """One row per periodic task, one dot per tick at its due time (hours since `start`),
    coloured by the worker that ran it. Each tick ran once: two workers' dots on one tick
    would sit on top of each other, so a double run is also written in the title."""
    attempts = sorted(history, key=lambda a: (a.scheduled_for, a.task_name))
    title = "Ticks of one day, by the worker that ran each"
    ax = new_axes(ax, title, f"hours since {utc(start)}", "", (9, 2.6))
    if not attempts:
        return no_data(ax)
    names = sorted({short_task_name(a.task_name) for a in attempts})
    workers = sorted({a.worker_id for a in attempts})
    for a in attempts:
        row = names.index(short_task_name(a.task_name))
        color = SERIES_COLORS[workers.index(a.worker_id) % len(SERIES_COLORS)]
        hours = (a.scheduled_for - start) / HOUR
        ax.scatter(hours, row, s=70, color=color, zorder=3, **EDGE)
    twice = sum(n - 1 for n in Counter((a.task_name, a.scheduled_for) for a in attempts).values())
    ax.set_title(f"{ax.get_title()} ({len(attempts)} ticks, {twice} run twice)")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlim(0, 24.5)
    ax.set_xticks(range(0, 25, 3))
    ax.grid(axis="x", alpha=0.3)
    handles = [
        Line2D([], [], marker="o", ls="", color=SERIES_COLORS[i], mec="black", mew=0.5, label=w)
        for i, w in enumerate(workers)
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), title="worker")
    return ax


def starts_per_window(history: Iterable[Attempt], start: float, period: float) -> Counter[float]:
    """How many attempts started in each window [k·period, (k+1)·period) after `start`,
    keyed by the window's start in seconds (a FakeClock's times are exact, a tiny slack
    absorbs the rounding of epoch-second floats)."""
    return Counter(round((a.started_at - start + 1e-6) // period * period, 6) for a in history)


def draw_rate_timeline(
    history: Iterable[Attempt],
    start: float,
    *,
    limit: int,
    period: float,
    ax: Axes | None = None,
) -> Axes:
    """Each start as a block stacked in its `period`-long window (seconds since `start`),
    with the windows' edges and the limit drawn: no stack may rise above the line."""
    attempts = sorted(history, key=lambda a: (a.started_at, a.task_id))
    ax = new_axes(
        ax, f"Starts under a limit of {limit} per {period:g} s", "seconds", "starts", (8, 3.2)
    )
    if not attempts:
        return no_data(ax)
    height: Counter[float] = Counter()
    for a in attempts:
        at = a.started_at - start
        window = round((at + 1e-6) // period * period, 6)
        ax.bar(at, 1, bottom=height[window], width=0.12 * period, align="edge",
               color=SERIES_COLORS[0], **EDGE)  # fmt: skip
        height[window] += 1
    end = max(height) + period
    for k in range(int(end / period) + 1):
        ax.axvline(k * period, color="grey", lw=0.8, ls=":")
    ax.axhline(limit, color="#d62728", lw=1.2, ls="--", label=f"limit: {limit} per window")
    ax.set_xlim(-0.1 * period, end)
    ax.set_ylim(0, limit + 1.5)
    ax.legend(loc="upper right")
    return ax


def utc(moment: float) -> str:
    """A clock time (epoch seconds) as "2026-01-01 01:00 UTC": the lesson's FakeClock starts
    on 2026-01-01 at midnight UTC, and ticks read better as times of day than as numbers."""
    return dt.datetime.fromtimestamp(moment, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def runs_per_tick(history: Iterable[Attempt]) -> Counter[tuple[str, float]]:
    """How many attempts ran for each tick, keyed by (task name, due time).

    A tick's task is due at the tick's time, so two runs of one tick would share a key:
    "each tick once" is `set(runs_per_tick(history).values()) == {1}`.
    """
    return Counter((a.task_name, a.scheduled_for) for a in history)


async def show_steps(queue: TaskQueue, ids: Sequence[str]) -> None:
    """Print one line per step of a pipeline: name, status, attempts, and its error.

    A cancelled step's error names its parent by task id, which is random (and differs on
    every run); each id of these steps found in an error is printed as the step's name,
    in angle brackets, so the line says which step it waited for.
    """
    infos = [await queue.get_task(task_id) for task_id in ids]
    names = {info.task_id: f"<{short_task_name(info.name)}>" for info in infos}
    for info in infos:
        error = info.error or ""
        for task_id, name in names.items():
            error = error.replace(task_id, name)
        kind = f"{info.error_type}: " if info.error_type else ""
        name = short_task_name(info.name)
        line = f"{name:<14} {info.status.value:<10} attempts={info.attempts}  {kind}{error}"
        print(line.rstrip())
