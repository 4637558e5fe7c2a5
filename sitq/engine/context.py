"""What a running task can learn about itself: `current_task()` and `report_progress()`.

The worker sets a context variable before it calls a task, so code deep inside the task
can ask which task it is part of, or report how far along it is, without a parameter.
Both work in async tasks and in plain functions running in the worker's threads.
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
        if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
            raise ValueError(f"progress must be between 0.0 and 1.0, got {fraction}")
        coro = self._report(fraction, message)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            pending: Any = self._loop.create_task(coro)
        else:  # called from a worker thread: hand the write to the worker's loop
            pending = asyncio.run_coroutine_threadsafe(coro, self._loop)
        self._pending.add(pending)  # keep a reference until the write is done
        pending.add_done_callback(self._written)

    def _written(self, pending: Any) -> None:
        """A progress write ended. If storage refused it (a locked database, a full disk),
        that is logged, never the task's error: progress is news, not the outcome."""
        self._pending.discard(pending)
        if not pending.cancelled() and pending.exception() is not None:
            logger.warning("task %s: progress not stored: %s", self.task_id, pending.exception())

    async def flush_progress(self) -> None:
        """Wait for the progress writes made so far. The worker calls this before storing
        the outcome, so a report made just before the task returns is not lost."""
        writes = [
            w if isinstance(w, asyncio.Future) else asyncio.wrap_future(w)
            for w in list(self._pending)
        ]
        if writes:
            await asyncio.wait(writes)


_current: contextvars.ContextVar[TaskContext | None] = contextvars.ContextVar(
    "sitq_current_task", default=None
)


def current_task() -> TaskContext:
    """The task being run by the calling code; raises LookupError outside a task."""
    found = _current.get()
    if found is None:
        raise LookupError(
            "current_task() was called outside a sitq task, or in a process task "
            "(executor='process'), which runs in another process with no link to its worker"
        )
    return found


def report_progress(fraction: float, message: str = "") -> None:
    """Shortcut for `current_task().report_progress(fraction, message)`."""
    current_task().report_progress(fraction, message)


def set_current(context: TaskContext | None) -> contextvars.Token[TaskContext | None]:
    return _current.set(context)


def reset_current(token: contextvars.Token[TaskContext | None]) -> None:
    _current.reset(token)
