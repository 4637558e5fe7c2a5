"""The task functions every benchmark runs, in a module that worker processes can import.

`run.py` puts this folder on PYTHONPATH, so `python -m sitq worker DB --import _tasks` finds
these functions, and cloudpickle stores them by reference (`_tasks.noop`), exactly as it
would store a function from an application's own module.

The tasks do (almost) nothing on purpose: a benchmark of a queue measures the queue.
`Countdown` lets a benchmark in this process know the moment the N-th task has run,
without polling the database (which would itself cost time and compete for the file).
"""

from __future__ import annotations

import asyncio
import threading
import time


class Countdown:
    """Counts task runs in this process; says when the expected number have run.

    Thread-safe, because huey runs tasks in its worker threads while sitq runs async
    tasks on the event loop. `arm(n)` before starting, then `wait()` (threads) or
    `await wait_async()` (the event loop that called `arm`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._left = 0
        self._done = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_done: asyncio.Event | None = None

    def arm(self, n: int) -> None:
        """Expect `n` runs from now on. From inside an event loop, `wait_async` works too."""
        with self._lock:
            self._left = n
            self._done.clear()
            try:
                self._loop = asyncio.get_running_loop()
                self._async_done = asyncio.Event()
            except RuntimeError:
                self._loop = self._async_done = None

    def tick(self) -> None:
        """One task ran; the last expected one wakes whoever waits."""
        with self._lock:
            self._left -= 1
            if self._left != 0:
                return
            self._done.set()
            if self._loop is not None and self._async_done is not None:
                self._loop.call_soon_threadsafe(self._async_done.set)

    def wait(self, timeout: float) -> None:
        if not self._done.wait(timeout):
            raise TimeoutError(f"{self._left} task run(s) still missing after {timeout}s")

    async def wait_async(self, timeout: float) -> None:
        assert self._async_done is not None, "arm() the countdown inside the event loop"
        try:
            await asyncio.wait_for(self._async_done.wait(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self._left} task run(s) still missing after {timeout}s") from None


COUNTDOWN = Countdown()


async def tick() -> None:
    """A no-op async task that counts itself (drain benchmarks in this process)."""
    COUNTDOWN.tick()


def tick_sync() -> None:
    """The same for huey and the raw queue, which run plain functions."""
    COUNTDOWN.tick()


async def noop() -> None:
    """A no-op async task (worker processes, enqueue benchmarks)."""


def noop_sync() -> None:
    """A no-op plain function (huey's enqueue benchmark)."""


async def one() -> int:
    """A task with a result to fetch (end-to-end benchmarks)."""
    return 1


def one_sync() -> int:
    return 1


#: How long `io_wait` awaits: a call to a nearby service (an API, another database).
IO_SECONDS = 0.020


async def io_wait() -> None:
    """Await IO_SECONDS doing nothing, as a task waiting on the network does: it holds one
    of the worker's concurrency slots but little CPU. One worker process then runs at most
    concurrency / IO_SECONDS tasks a second (500/s at 10 and 20 ms), so more processes can
    run more, as long as the queue keeps up: the task that shows whether scale-out scales.
    No-op tasks measure only the database (and, on one machine, its CPU and disk)."""
    await asyncio.sleep(IO_SECONDS)


async def stamp() -> float:
    """Return the wall-clock time at which the task started: pickup latency, even when
    the task runs in another process (same machine, same clock)."""
    return time.time()
