"""A live view of a queue in Jupyter, like Dask's cluster widget: `queue.live()`.

Displaying a queue in a notebook (or `queue.live()`) shows a widget that redraws itself
about once a second: tasks per state, attempts finished and failed over the last minutes
as text bars, the newest failures with their error, the running tasks with their progress
and worker, and the circuit breakers of the workers you pass (`worker=`: breakers live in
a `Worker` object, not in the database, so only a worker in this kernel can show them).

What it costs, and when it stops:

- Nothing runs until the view is displayed: making a queue, or a view, starts nothing.
  Then one asyncio task on the kernel's loop reads three things a refresh (`counts()`, up
  to ten running tasks, and the newest attempt records, a read bounded by `scan` however
  long the history is) and never writes.
- It stops for good at `view.close()`, when the queue is closed, or when the cell that
  showed it runs again (a view shown from a notebook cell replaces the one that cell showed
  before; JupyterLab and Notebook 7 tell the kernel which cell runs). If the kernel goes,
  the task goes with it. A view whose output was cleared, or whose tab was closed with the
  kernel left running, refreshes on until then. (ipywidgets' view count, `_view_count`,
  would tell; but in JupyterLab 4.6 with ipywidgets 8.1 the browser never reported a view
  gone while the kernel kept updating the widget, as this one does every second.)
- A refresh that fails (a locked file, a lost server) shows its error in the view and the
  next one tries again: nothing is logged every second.
- Time comes from the queue's clock: under a `FakeClock`, "the last 2 min" are virtual.

`await view.refresh()` redraws it at once: that is how tests and notebooks without a
browser drive it, one step at a time.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sitq.errors import QueueClosedError
from sitq.options import seconds_setting
from sitq.task import TaskStatus
from sitq.views.live_html import SHOWN_RUNNING, Snapshot, render

if TYPE_CHECKING:
    from sitq.engine.queue import TaskQueue
    from sitq.engine.worker import Worker
    from sitq.policy.breaker import CircuitBreaker

DEFAULT_INTERVAL = 1.0  # seconds between refreshes
DEFAULT_WINDOW = 120.0  # seconds of "the last minutes"
BARS = 24  # slots of the window in the text bars (5 s each by default)
DEFAULT_SCAN = 2_000  # attempt records read a refresh, at most (about 10 ms on SQLite)


class LiveView:
    """A queue's live view: an ipywidgets `HTML` widget and the task that refreshes it.

    interval: seconds between refreshes. window: how far back the activity bars and rates
    look, in seconds of the queue's clock. worker: a `Worker` (or several) whose circuit
    breakers to show. scan: the most attempt records one refresh reads (the rates say so
    when the window holds more). reads_on: the loop the queue's backend belongs to, when it
    is not the one refreshing the view (a SyncTaskQueue's own loop thread).
    """

    def __init__(
        self,
        queue: TaskQueue,
        *,
        interval: float = DEFAULT_INTERVAL,
        window: float = DEFAULT_WINDOW,
        worker: Worker | Iterable[Worker] | None = None,
        scan: int = DEFAULT_SCAN,
        reads_on: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        try:
            import ipywidgets
        except ImportError as exc:
            raise ImportError(
                "the live view needs ipywidgets: pip install 'sitq[notebook]' (or ipywidgets)"
            ) from exc
        self.queue = queue
        self.interval: float = seconds_setting("interval", interval)
        self.window: float = seconds_setting("window", window)
        if isinstance(scan, bool) or not isinstance(scan, int) or scan < 1:
            raise ValueError(f"scan must be a number of attempt records >= 1; got {scan!r}")
        self.scan = scan
        self.reads_on = reads_on
        workers = list(worker) if isinstance(worker, Iterable) else [worker] if worker else []
        self.breakers: list[tuple[str, str, CircuitBreaker]] = [
            (w.worker_id, name, breaker) for w in workers for name, breaker in w.breakers.items()
        ]
        self.note: str = f"live, every {self.interval:g} s"
        self.refreshes: int = 0
        self._last: Snapshot | None = None  # what the previous refresh read
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.widget: Any = ipywidgets.HTML(value="<p>sitq queue: loading…</p>")
        self.widget.observe(self._comm_changed, names="comm")

    def __repr__(self) -> str:
        # What a notebook stores as text/plain beside the widget: the same on every run.
        return f"LiveView(interval={self.interval:g}, window={self.window:g})"

    @property
    def running(self) -> bool:
        """True while the refresh task is alive."""
        return self._task is not None and not self._task.done()

    @property
    def closed(self) -> bool:
        return self.widget.comm is None

    # -- in Jupyter ------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        """Jupyter displays the widget; displaying is what starts the refreshes."""
        if self.closed:
            return {"text/plain": f"{self!r} (closed)"}
        self.start(cell=current_cell())
        bundle: dict[str, Any] = self.widget._repr_mimebundle_(**kwargs)
        bundle["text/plain"] = repr(self)
        return bundle

    def start(self, *, cell: str | None = None) -> None:
        """Start refreshing on the running event loop (the kernel's); again: no-op.
        Without a running loop (a plain script), nothing starts: use `await refresh()`.
        `cell`: the notebook cell showing the view; the view it showed before is closed."""
        if self.running or self.closed:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self.note = "not refreshing: no running event loop here"
            return
        if cell is not None:
            shown = _SHOWN_BY_CELL.get(cell)
            earlier = None if shown is None else shown()
            if earlier is not None and earlier is not self:
                earlier.close()  # the cell ran again: its old view stops
            _SHOWN_BY_CELL[cell] = weakref.ref(self)
        self._task = self._loop.create_task(self._refresh_while_open(), name="sitq live view")

    def close(self) -> None:
        """Stop refreshing for good and remove the widget from the page."""
        self._stop()
        self.widget.close()

    # -- refreshing ------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the queue once and redraw. A failed read shows in the view; a closed
        queue stops the view (QueueClosedError reaches the caller)."""
        problem = None
        try:
            snapshot = await self._read()
        except QueueClosedError:
            self.note = "stopped: the queue is closed"
            self.widget.value = render(self._last_or_empty())
            raise
        except Exception as exc:  # shown in the view, tried again at the next refresh
            problem = f"{type(exc).__name__}: {exc}"
            snapshot = self._last_or_empty()
        self._last = snapshot
        self.widget.value = render(replace(snapshot, note=self.note, problem=problem))
        self.refreshes += 1

    async def _read(self) -> Snapshot:
        if self.reads_on is None:
            return await self._read_here()
        if not self.reads_on.is_running():  # the SyncTaskQueue was closed
            raise QueueClosedError("the queue is closed")
        future = asyncio.run_coroutine_threadsafe(self._read_here(), self.reads_on)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and not me.cancelling():  # cancelled there: the queue closing
                raise QueueClosedError("the queue was closed during a refresh") from None
            raise

    async def _read_here(self) -> Snapshot:
        """The reads themselves, on the loop the queue's backend belongs to."""
        counts = await self.queue.counts()
        backend = self.queue.backend
        running: list[Any] = []
        if counts[TaskStatus.RUNNING]:
            running = await backend.list_tasks([TaskStatus.RUNNING], SHOWN_RUNNING)
        attempts = await backend.newest_attempts(self.scan)
        return Snapshot(
            now=self.queue.clock.now(), window=self.window, bars=BARS, counts=counts,
            attempts=attempts, scanned=self.scan, running=running, breakers=self.breakers,
        )  # fmt: skip

    def _last_or_empty(self) -> Snapshot:
        if self._last is not None:
            return replace(self._last, note=self.note)
        now = self.queue.clock.now()
        return Snapshot(now=now, window=self.window, bars=BARS, counts={}, attempts=[],
                        scanned=self.scan, note=self.note)  # fmt: skip

    async def _refresh_while_open(self) -> None:
        """The task: refresh, then sleep. It ends when the queue is closed (the view says
        so), or cancelled by `close()`."""
        with suppress(QueueClosedError):
            while not self.closed:
                await self.refresh()
                await asyncio.sleep(self.interval)

    def _comm_changed(self, change: dict[str, Any]) -> None:
        """`widget.close()` (by us, or by anyone holding the widget) ends the task."""
        if change["new"] is None:
            self._stop()

    def _stop(self) -> None:
        if self._task is not None and not self._task.done():
            if self._loop is not None and self._loop.is_closed():
                return
            self._task.cancel()


#: The view each notebook cell showed last (weakly: a closed view may be forgotten).
_SHOWN_BY_CELL: dict[str, weakref.ref[LiveView]] = {}


def current_cell() -> str | None:
    """The id of the notebook cell being run, as JupyterLab and Notebook 7 send it with
    each request (None outside a kernel, or from a front end that does not say)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    kernel = getattr(get_ipython(), "kernel", None)
    if kernel is None:
        return None
    cell = kernel.get_parent().get("metadata", {}).get("cellId")
    return cell if isinstance(cell, str) else None


def bundle_of(queue: TaskQueue, **kwargs: Any) -> dict[str, Any] | None:
    """A queue's display in Jupyter: its live view (None without ipywidgets: its repr)."""
    try:
        view = LiveView(queue)
    except ImportError:
        return None
    return view._repr_mimebundle_(**kwargs)
