"""Lesson 17's helpers: workers stepping one clock run each tick once; the figures draw what
happened (one dot per tick, one block per start, nothing above the limit)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from sitq import FakeClock, SQLiteBackend, TaskQueue, Worker
from sitq.task import Attempt
from sitq.teaching import schedules as lesson

HOUR = 3600.0


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


async def stock_sync() -> str:
    return "synced"


def start(task: str, name: str, worker: str, due: float, at: float) -> Attempt:
    return Attempt(task, name, 1, worker, due, at, at, "succeeded")


async def test_two_workers_stepping_one_clock_share_the_ticks_each_once(tmp_path: Path) -> None:
    clock = FakeClock()
    db = tmp_path / "shop.db"
    async with TaskQueue(SQLiteBackend(db), clock=clock) as queue:
        await queue.schedule(stock_sync, every=HOUR)
        pair = [
            Worker(SQLiteBackend(db), clock=clock, worker_id=f"w{n}", rng=random.Random(n))
            for n in (1, 2)
        ]
        ran = await lesson.step_together(clock, pair, step=HOUR / 2, until=clock.start + 6 * HOUR)
        for worker in pair:
            await worker.stop()
        history = await queue.history()
    assert clock.now() == clock.start + 6 * HOUR  # stepped up to `until`, not past it
    assert sum(ran.values()) == 6 and set(ran) == {"w1", "w2"}
    per_tick = lesson.runs_per_tick(history)
    assert sorted(due for _, due in per_tick) == [clock.start + HOUR * k for k in range(1, 7)]
    assert set(per_tick.values()) == {1}


def test_runs_per_tick_counts_a_tick_run_twice() -> None:
    history = [start("a", "sync", "w1", 10, 10), start("b", "sync", "w2", 10, 10)]
    assert lesson.runs_per_tick(history) == {("sync", 10): 2}


def test_draw_ticks_puts_one_dot_per_tick_on_its_task_row_in_its_workers_colour() -> None:
    t0 = 1_000_000.0
    history = [
        start("a", "shop:sync", "w1", t0 + HOUR, t0 + HOUR),
        start("b", "shop:sync", "w2", t0 + 2 * HOUR, t0 + 2 * HOUR),
        start("c", "shop:report", "w1", t0 + HOUR, t0 + HOUR),
    ]
    ax = lesson.draw_ticks(history, t0)
    dots = [(tuple(c.get_offsets()[0]), tuple(c.get_facecolor()[0])) for c in ax.collections]
    assert sorted(xy for xy, _ in dots) == [(1.0, 0.0), (1.0, 1.0), (2.0, 1.0)]
    assert len({colour for _, colour in dots}) == 2  # one per worker
    assert [t.get_text() for t in ax.get_yticklabels()] == ["report", "sync"]
    assert "3 ticks, 0 run twice" in ax.get_title()


def test_starts_per_window_and_the_timeline_keep_each_start_in_its_window() -> None:
    t0 = 1_767_225_600.0  # epoch seconds, as a FakeClock gives: float rounding included
    times = [0.0] * 5 + [1.0] * 5 + [2.0] * 2
    history = [start(f"t{i}", "api", "w", t0, t0 + at) for i, at in enumerate(times)]
    assert lesson.starts_per_window(history, t0, 1.0) == {0.0: 5, 1.0: 5, 2.0: 2}
    ax = lesson.draw_rate_timeline(history, t0, limit=5, period=1.0)
    tops = [bar.get_y() + bar.get_height() for bar in ax.patches]
    assert len(tops) == 12 and max(tops) == 5


def test_utc_reads_the_fake_clocks_start() -> None:
    assert lesson.utc(FakeClock().now()) == "2026-01-01 00:00 UTC"


async def reserve(after: str) -> str:
    raise ValueError(f"order 8 is out of stock, said after {after}")


async def test_show_steps_prints_each_step_and_names_ids_in_errors_by_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    async with TaskQueue(SQLiteBackend(tmp_path / "steps.db"), clock=clock) as queue:
        first = await queue.enqueue(stock_sync)
        failing = await queue.enqueue(reserve, first)
        worker = Worker(queue.backend, clock=clock)
        await worker.run_until_idle()
        await worker.stop()
        await lesson.show_steps(queue, [first, failing])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["stock_sync", "succeeded", "attempts=1"]
    assert lines[1].split()[:3] == ["reserve", "failed", "attempts=1"]
    assert lines[1].endswith("ValueError: order 8 is out of stock, said after <stock_sync>")
