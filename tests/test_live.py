"""Issue 26, point 4: the live queue view in Jupyter (`queue.live()`, `sitq.views.live`).

The view's refresh is a coroutine, so these tests drive it one step at a time and read
the widget's HTML: counts, activity over the window of the queue's clock, failures
(escaped and cut), running tasks with progress and worker, breakers. Then its life: what
starts it (a display, nothing else), what pauses it (no view on the page), what stops it
(close, a closed widget, a closed queue). They run on SQLite and on PostgreSQL. The view in
a real browser is tests/test_browser.py's.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import sitq
from sitq import CircuitBreaker, FakeClock, RetryPolicy, SyncTaskQueue, TaskQueue, Worker
from sitq.backends import Backend
from sitq.backends.sqlite.sql import NEWEST_ATTEMPTS
from sitq.views.live import LiveView
from sitq.views.live_html import Activity, failure_line, sparkline

pytestmark = pytest.mark.every_backend  # the conformance suite: SQLite and PostgreSQL

GATE: dict[str, asyncio.Event] = {}
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>"


@pytest.fixture(autouse=True)
def _fresh_gate() -> Iterator[None]:
    GATE.update(started=asyncio.Event(), release=asyncio.Event())
    yield
    GATE.clear()


async def ok(x: int) -> int:
    return x


async def fails(reason: str) -> None:
    raise ValueError(reason)


async def held() -> str:
    """Report progress, wait until it is stored, then hold until the test releases it."""
    sitq.report_progress(0.4, "parsed 40 <rows>")
    await sitq.current_task().flush_progress()
    GATE["started"].set()
    await GATE["release"].wait()
    return "done"


def count_of(view: LiveView, status: str) -> int:
    """The number the view shows for one state."""
    found = re.search(rf'data-status="{status}"[^>]*>{status} <b>([\d,]+)</b>', view.widget.value)
    assert found, view.widget.value
    return int(found.group(1).replace(",", ""))


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll `condition()` until it is true, failing after `seconds`."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# -- the backend read ------------------------------------------------------------------


async def test_newest_attempts_come_newest_first(
    backend: Backend, queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    ids = []
    for x in range(5):
        ids.append(await queue.enqueue(ok, x))
        await worker.run_until_idle()
        clock.advance(1)
    newest = await backend.newest_attempts(3)
    assert [a.task_id for a in newest] == ids[:1:-1]
    assert [a.finished_at for a in newest] == [clock.now() - 1, clock.now() - 2, clock.now() - 3]
    assert [a.task_id for a in await backend.newest_attempts(100)] == ids[::-1]


@pytest.mark.sqlite_only
async def test_newest_attempts_read_the_rowid_backwards(queue: TaskQueue, db_path: Path) -> None:
    await queue.enqueue(ok, 1)  # the file exists, with its tables
    with sqlite3.connect(db_path) as conn:
        plan = conn.execute(f"EXPLAIN QUERY PLAN {NEWEST_ATTEMPTS}", (10,)).fetchall()
    assert [row[-1] for row in plan] == ["SCAN sitq_attempts"]  # no "USE TEMP B-TREE"


# -- what one refresh shows --------------------------------------------------------------


async def test_view_shows_counts_activity_and_failures(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    for x in range(3):
        await queue.enqueue(ok, x)
    await queue.enqueue(fails, "card declined")
    await worker.run_until_idle()
    view = queue.live()
    await view.refresh()
    html = view.widget.value
    shown = {status: count_of(view, status) for status in ("succeeded", "failed", "queued")}
    assert shown == {"succeeded": 3, "failed": 1, "queued": 0}
    assert "4 attempts in the last 2 min, 2.0/min; 48.0/min in the last 5.0 s" in html
    assert "1 failed: 25% failure rate" in html
    assert "ValueError: card declined" in html and "newest failures" in html

    # The window is read on the queue's clock: three virtual minutes later, all is old.
    clock.advance(180)
    await view.refresh()
    assert "no attempt finished in the last 2 min" in view.widget.value
    assert count_of(view, "succeeded") == 3
    view.close()


async def test_tasks_are_labelled_by_name_not_hash_id(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    """Two failed tasks of one name read "fails #1" and "fails #2", numbered in the order
    they first failed, and no row shows a hash id: a reader follows names, not ids."""
    ids = []
    for message in ("first", "second"):
        ids.append(await queue.enqueue(fails, message))
        await worker.run_until_idle()
        clock.advance(1)
    view = queue.live()
    await view.refresh()
    html = view.widget.value
    assert "<td>fails #1</td>" in html and "<td>fails #2</td>" in html
    assert html.index("ValueError: second") < html.index("ValueError: first")  # newest first
    assert html.index("fails #2") < html.index("fails #1")
    assert not any(task_id[:8] in html for task_id in ids)
    view.close()


async def test_an_error_text_is_escaped_and_cut(queue: TaskQueue, worker: Worker) -> None:
    await queue.enqueue(fails, EVIL + "y" * 1000)
    await worker.run_until_idle()
    view = queue.live()
    await view.refresh()
    html = view.widget.value
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&lt;img src=x" in html
    assert "y" * 50 in html and "y" * 1000 not in html and "…" in html
    view.close()


async def test_running_task_shows_progress_and_worker(queue: TaskQueue, worker: Worker) -> None:
    await queue.enqueue(held)
    run = asyncio.create_task(worker.run_once())
    await asyncio.wait_for(GATE["started"].wait(), timeout=5)
    view = queue.live()
    await view.refresh()
    html = view.widget.value
    assert count_of(view, "running") == 1
    assert "<td>held</td>" in html and "<td>w1</td>" in html
    assert "████░░░░░░ 40%" in html and "parsed 40 &lt;rows&gt;" in html
    GATE["release"].set()
    assert await run == 1
    await view.refresh()
    assert count_of(view, "running") == 0 and "<td>held</td>" not in view.widget.value
    view.close()


async def test_a_full_read_says_how_far_back_it_reached(
    queue: TaskQueue, worker: Worker, clock: FakeClock
) -> None:
    for x in range(5):
        await queue.enqueue(ok, x)
        await worker.run_until_idle()
        clock.advance(10)
    view = LiveView(queue, scan=2)
    await view.refresh()
    # Only 2 of the 5 attempts were read: the rate covers the 20 s they span, no more,
    # and the slots the read did not reach are blank, not zero.
    expected = "2 attempts in the last 2 min, 6.0/min (read: the newest 2, 20 s); 0.0/min in"
    assert expected in view.widget.value
    view.close()


async def test_breakers_of_a_worker_show_without_being_moved(
    backend: Backend, queue: TaskQueue, clock: FakeClock
) -> None:
    breaker = CircuitBreaker(2, recovery_timeout=30, clock=clock, name="payments")
    worker = Worker(backend, clock=clock, worker_id="w1", breakers={"fails": breaker})
    for _ in range(2):
        await queue.enqueue(fails, "gateway down")
    await worker.run_until_idle()
    view = queue.live(worker=worker)
    await view.refresh()
    assert "<td>fails</td><td>w1</td><td>open</td><td>probes again in 30 s</td>" in (
        view.widget.value
    )
    clock.advance(30)
    moves = list(breaker.transitions)
    await view.refresh()
    assert "<td>half_open</td>" in view.widget.value
    assert breaker.transitions == moves  # looking did not record a move
    view.close()


async def test_a_retrying_failure_shows_before_it_is_dead(queue: TaskQueue, worker: Worker) -> None:
    await queue.with_options(retry=RetryPolicy.fixed(60, max_attempts=3)).enqueue(
        fails, "timeout talking to the bank"
    )
    assert await worker.run_once() == 1
    view = queue.live()
    await view.refresh()
    assert count_of(view, "retrying") == 1
    assert "<td>retrying</td><td>ValueError: timeout talking to the bank</td>" in (
        view.widget.value
    )
    view.close()


def test_sparkline_scales_to_the_largest_and_leaves_unknown_blank() -> None:
    assert sparkline([0, 1, 4, 8, -1]) == "▁▂▅█ "
    assert sparkline([0, 0]) == "▁▁"
    seen = Activity(finished=[-1, 0, 4, 4, 4], failed=[-1, 0, 0, 1, 4], covered_from=0.0)
    assert failure_line(seen) == " ·▁▃█"  # unknown, nothing finished, 0%, 25%, 100%


# -- its life: what starts, pauses and stops it -------------------------------------------


async def test_nothing_runs_until_a_view_is_displayed(backend: Backend) -> None:
    before = asyncio.all_tasks()
    queue = TaskQueue(backend)
    view = queue.live()
    assert asyncio.all_tasks() == before and not view.running
    bundle = view._repr_mimebundle_()  # what Jupyter calls to display it
    assert WIDGET_MIME in bundle and bundle["text/plain"] == "LiveView(interval=1, window=120)"
    assert view.running
    view.close()
    await until(lambda: not view.running)
    assert asyncio.all_tasks() == before


def test_widget_code_loads_only_when_a_view_is_made(tmp_path: Path) -> None:
    code = f"""
import sys, sitq
def widget_modules():
    return sorted(m for m in sys.modules if m.startswith(("ipywidgets", "sitq.views.live_html")))
queue = sitq.TaskQueue({str(tmp_path / "q.db")!r})
print(widget_modules())
view = queue.live()
print(widget_modules())
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.splitlines()
    assert before == "[]"
    assert "'ipywidgets'" in after and "'sitq.views.live_html'" in after


async def test_a_displayed_queue_is_its_live_view(queue: TaskQueue) -> None:
    bundle = queue._repr_mimebundle_()
    assert bundle is not None and WIDGET_MIME in bundle
    assert bundle["text/plain"] == "LiveView(interval=1, window=120)"
    [task] = [t for t in asyncio.all_tasks() if t.get_name() == "sitq live view"]
    task.cancel()  # what closing the view does
    await until(task.done)


async def test_a_cell_run_again_replaces_its_view(queue: TaskQueue) -> None:
    first, second, other = (LiveView(queue, interval=0.01) for _ in range(3))
    first.start(cell="cell-a")  # what displaying it from notebook cell "cell-a" does
    other.start(cell="cell-b")
    await until(lambda: first.refreshes >= 2)
    second.start(cell="cell-a")  # the cell ran again
    await until(lambda: not first.running)
    assert first.closed and second.running and other.running
    refreshes = other.refreshes
    await until(lambda: other.refreshes > refreshes)  # another cell's view carries on
    second.close()
    other.close()
    await until(lambda: not (second.running or other.running))


async def test_closing_the_widget_stops_the_task(queue: TaskQueue) -> None:
    view = LiveView(queue, interval=0.01)
    view.start()
    await until(lambda: view.refreshes >= 2)
    view.widget.close()  # as anyone holding the widget may do
    await until(lambda: not view.running)
    assert view.closed
    view.start()  # a closed view stays closed
    assert not view.running


async def test_a_closed_queue_stops_the_view_quietly(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    queue = TaskQueue(backend)
    view = LiveView(queue, interval=0.01)
    view.start()
    await until(lambda: view.refreshes >= 1)
    await queue.close()
    await until(lambda: not view.running)
    assert "stopped: the queue is closed" in view.widget.value
    assert caplog.records == []
    view.close()


@pytest.mark.sqlite_only
async def test_a_sync_queue_shows_live_too(tmp_path: Path) -> None:
    """A SyncTaskQueue's backend belongs to its own loop thread: the view refreshes on this
    loop (the notebook's) and reads over there; closing the queue stops it."""
    with SyncTaskQueue(str(tmp_path / "q.db")) as queue:
        queue.enqueue(ok, 1)
        worker = queue.worker(worker_id="sync-w")
        assert worker.run_until_idle() == 1
        view = queue.live(interval=0.01, worker=worker)
        await view.refresh()
        assert count_of(view, "succeeded") == 1
        view.start()
        await until(lambda: view.refreshes >= 3)
    await until(lambda: not view.running)
    assert "stopped: the queue is closed" in view.widget.value
    view.close()
