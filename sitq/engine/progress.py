"""Progress a running task reports (`report_progress`): written beside the task, never
in its way.

A report is a write to storage; the task must not wait for it, so it becomes an asyncio
task on the worker's loop (handed over thread-safely when the task is a plain function in
a thread). The worker waits for the writes still pending before it stores the outcome
(`flush`), so a report made just before the task returns is not lost. A write that storage
refuses (a locked database, a full disk) is logged, never the task's error: progress is
news, not the outcome.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Coroutine
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
