"""What a running task can learn about itself and tell: `current_task()` (its id, name,
attempt, start time, its parents' results) and `report_progress()`.

A progress report is a write to storage; the task must not wait for it, so it becomes an
asyncio task on the worker's loop (handed over thread-safely when the task is a plain
function in a thread). The worker waits for the writes still pending before it stores the
outcome (`flush`), so a report made just before the task returns is not lost. A write that
storage refuses (a locked database, a full disk) is logged, never the task's error:
progress is news, not the outcome.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

logger: logging.Logger = logging.getLogger("sitq.worker")


def report(
    write: Callable[[float, str], Coroutine[Any, Any, None]],
    loop: asyncio.AbstractEventLoop,
    pending: set[Any],
    task_id: str,
    fraction: float,
    message: str,
) -> None:
    """Start writing (fraction, message) on `loop`; `pending` keeps it until it is done."""
    if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
        raise ValueError(f"progress must be between 0.0 and 1.0, got {fraction}")
    coro = write(fraction, message)
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        started: Any = loop.create_task(coro)
    else:  # called from a worker thread: hand the write to the worker's loop
        started = asyncio.run_coroutine_threadsafe(coro, loop)
    pending.add(started)  # keep a reference until the write is done

    def written(done: Any) -> None:
        pending.discard(done)
        if not done.cancelled() and done.exception() is not None:
            logger.warning("task %s: progress not stored: %s", task_id, done.exception())

    started.add_done_callback(written)


async def flush(pending: set[Any]) -> None:
    """Wait for the writes started so far."""
    writes = [w if isinstance(w, asyncio.Future) else asyncio.wrap_future(w) for w in list(pending)]
    if writes:
        await asyncio.wait(writes)


# -- what a running task can learn about itself ------------------------------------------------


@dataclass(frozen=True)
class TaskContext:
    """The running task: its id, name, attempt number, worker and start time."""

    task_id: str
    task_name: str
    attempt: int
    worker_id: str
    _report: Callable[[float, str], Coroutine[Any, Any, None]] = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    #: When this attempt started, in epoch seconds on the worker's clock. With a FakeClock
    #: that is virtual time, which a task can read to simulate e.g. an outage from t1 to t2.
    started_at: float | None = None
    _pending: set[Any] = field(default_factory=set, repr=False, compare=False)
    #: Reads the results of this task's parents (set by the worker; see `parent_results`).
    _parents: Callable[[], Coroutine[Any, Any, list[Any]]] | None = field(
        default=None, repr=False, compare=False
    )

    async def parent_results(self) -> list[Any]:
        """The `Result`s of the tasks this one was enqueued after (`with_options(after=
        [...])`, the step before in a `chain`), in the order it named them. It runs only
        once they all succeeded, so each holds its value: `(await current_task().
        parent_results())[0].value`. A task without parents gets []. Call it from the
        task's own event loop (an async task); a thread task can use `queue.get_result`."""
        if self._parents is None:
            return []
        return await self._parents()

    def report_progress(self, fraction: float, message: str = "") -> None:
        """Store progress (0.0 to 1.0) and a message, visible through `queue.status`."""
        report(self._report, self._loop, self._pending, self.task_id, fraction, message)

    async def flush_progress(self) -> None:
        """Wait for the progress writes made so far. The worker calls this before storing
        the outcome, so a report made just before the task returns is not lost."""
        await flush(self._pending)


#: How to make the running task's `TaskContext`, set by the worker around the call. The
#: context itself is made only when the task asks for it (`current_task()`); each one made
#: shares the task's set of pending progress writes, which the worker waits for.
current_task_var: contextvars.ContextVar[Callable[[], TaskContext] | None] = contextvars.ContextVar(
    "sitq_current_task", default=None
)


def current_task() -> TaskContext:
    """The task being run by the calling code; raises LookupError outside a task."""
    make = current_task_var.get()
    if make is None:
        raise LookupError(
            "current_task() was called outside a sitq task, or in a process task "
            "(executor='process'), which runs in another process with no link to its worker"
        )
    return make()


def report_progress(fraction: float, message: str = "") -> None:
    """Shortcut for `current_task().report_progress(fraction, message)`."""
    current_task().report_progress(fraction, message)
