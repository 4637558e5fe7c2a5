"""Driving a worker from a program: `start()`, `run()`, `stop()`, `async with`, and a loop
that ended.

`Worker` inherits these from `WorkerRun`; the worker's own work (claim, run, settle) is
in `sitq.engine.worker`. Three ways in:

- `asyncio.run(worker.run())` in a script: runs until `stop()` is called (by a hook,
  another coroutine) or SIGINT/SIGTERM arrives, then stops gracefully and returns.
- `await worker.start()` ... `await worker.stop()` (or `async with worker:`) on a loop that
  keeps running: a notebook, a program with other work. `asyncio.run(worker.start())`
  is the trap: start() returns at once, asyncio.run ends its loop, and the worker ends
  with it. sitq warns (RuntimeWarning) when that happens.
- `stop()` of a worker whose event loop has gone (it was started, or ran `run_until_idle`,
  in an earlier `asyncio.run()`) cannot wait for anything of that loop: it forgets the
  worker's state at once (its leased tasks are taken over when their leases expire)
  instead of blocking, and the worker can be started again.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import warnings
from collections.abc import Callable
from contextlib import suppress
from typing import Self

from sitq.backends.base import Backend, Signal, first_of
from sitq.engine.leases import LeaseKeeper
from sitq.engine.pipeline import Pipeline
from sitq.engine.running import TaskRunner
from sitq.errors import EventLoopError

logger: logging.Logger = logging.getLogger("sitq.worker")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Why the worker stops a task, besides leases.CANCELLED and leases.LOST: the worker is
#: shutting down, or a task claimed ahead goes back to the queue before it started.
SHUTDOWN, UNSTARTED = "shutdown", "unstarted"


class WorkerRun:
    """`start()`, `run()`, `stop()`, `async with` for `sitq.engine.worker.Worker` (see the
    module doc)."""

    # Set by Worker.__init__ and its loop; declared here for the type checker.
    backend: Backend
    concurrency: int
    worker_id: str
    shutdown_grace: float | None
    _wake: Signal
    _heartbeat_stop: asyncio.Event
    _loop_task: asyncio.Task[None] | None
    runner: TaskRunner
    keeper: LeaseKeeper
    pipeline: Pipeline
    _heartbeat: asyncio.Task[None] | None
    _stops: dict[str, str]
    _stopping: bool
    _connected: bool
    _stopped: asyncio.Future[None] | None = None  # set while a stop() is under way
    _home: asyncio.AbstractEventLoop | None = None  # the loop it last started or ran on

    async def start(self) -> None:
        """Start the background loop on the running event loop and return at once."""
        if self._loop_task is not None:
            raise RuntimeError("this worker is already started")
        await self._ensure_connected()
        self._stopping = False
        self.pipeline.claims_along = True
        self._loop_task = asyncio.create_task(self._main_loop(), name=f"sitq-{self.worker_id}")
        self._loop_task.add_done_callback(self._loop_ended)

    async def _stop(self, grace: float | None = None) -> None:
        """`stop()` (in `sitq.engine.worker_run`): stop claiming, let running tasks finish (up
        to `grace` seconds), then hand back any still running without using an attempt."""
        self._stopping = True
        self.pipeline.claims_along = False
        self._wake.ring()
        if self._loop_task is not None:
            # The ring ends the loop at its next check. Cancelling it instead could land
            # inside a claim, whose rows would stay leased with no one to run them.
            with suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        await self._hand_back_waiting()
        grace = self.shutdown_grace if grace is None else grace
        running_now = self.pipeline.slots.running
        if running_now:
            await asyncio.wait(list(running_now.values()), timeout=grace)
        for task_id, work in list(running_now.items()):
            self._stops[task_id] = SHUTDOWN
            work.cancel()
        if running_now:
            await asyncio.wait(list(running_now.values()))
        await self.pipeline.drain()  # a claim still out may bring tasks in hand
        await self._hand_back_waiting()
        await self._close()

    async def _close(self) -> None:
        await self.pipeline.drain()  # the outcomes still on their way are stored
        self.runner.close()
        self._heartbeat_stop.set()
        if self._heartbeat is not None:
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        self._make_parts()  # fresh ones, should the worker start again
        if self._connected:
            self._connected = False
            await self.backend.close()

    # Defined by Worker (`sitq.engine.worker`): the loop, the tasks in hand, the pieces.
    async def _main_loop(self) -> None:
        raise NotImplementedError

    async def _hand_back_waiting(self) -> None:
        raise NotImplementedError

    async def _ensure_connected(self) -> None:
        raise NotImplementedError

    def _make_parts(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Run until `stop()` is called or SIGINT/SIGTERM arrives, then stop gracefully
        (as `stop()` does) and return: `asyncio.run(worker.run())` in a script.

        Signals are caught only in the main thread (elsewhere, stop it with `stop()`); a
        second Ctrl-C during the graceful stop goes to whoever handled it before (under
        asyncio.run: it interrupts the stop, and running tasks run again once their
        lease expires).
        """
        await self.start()
        ended = self._loop_task
        asked = asyncio.Event()
        restore = _on_signals(asked.set)
        try:
            waits = [asked.wait()] + ([asyncio.shield(ended)] if ended is not None else [])
            await first_of(waits, None)
        finally:
            restore()
            await self.stop()

    async def stop(self, grace: float | None = None) -> None:
        """Stop claiming, let running tasks finish (up to `grace` seconds), then hand back
        any still running to the queue without using an attempt. A call made while a stop
        is under way waits for it. On a worker whose event loop has gone, returns at once."""
        if self._stopped is not None and self._stopped.get_loop() is asyncio.get_running_loop():
            await asyncio.shield(self._stopped)
            return
        if self._loop_gone():
            await self._forget_dead_loop()
            return
        self._stopped = asyncio.get_running_loop().create_future()
        try:
            await self._stop(grace)
        finally:
            self._stopped.set_result(None)
            self._stopped = None

    def _loop_gone(self) -> bool:
        """Did this worker last start or run on an event loop other than this one, now
        not running (ended by asyncio.run)?"""
        home = self._home
        if home is None or home is asyncio.get_running_loop():
            return False
        if home.is_running():
            raise EventLoopError(
                f"{self!r} runs on an event loop in another thread: stop it from that loop"
            )
        return True

    async def _forget_dead_loop(self) -> None:
        """Nothing of the old loop can run again, so there is nothing to wait for: drop
        the worker's state, let its pools go, and release the backend."""
        if self._loop_task is not None:
            logger.warning(
                "worker %s: its event loop ended while it was started, so it cannot stop "
                "gracefully; tasks it held run again once their leases expire. In a script "
                "use `asyncio.run(worker.run())`",
                self.worker_id,
            )
        runner, self._loop_task, self._heartbeat = self.runner, None, None
        self._home, self._stopping, self._stops = None, False, {}
        runner.threads.shutdown(wait=False)
        if runner.processes.pool is not None:
            runner.processes.pool.shutdown(wait=False, cancel_futures=True)
        self._make_parts()
        if self._connected:
            self._connected = False
            await self.backend.close()

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """Called when the main loop's task ends: cancelled while not stopping means its
        event loop ended under it (`asyncio.run(worker.start())`)."""
        if task.cancelled() and not self._stopping:
            warnings.warn(
                f"{self!r} was still started when its event loop ended, and it ended with "
                "it: `asyncio.run(worker.start())` returns at once. In a script use "
                "`asyncio.run(worker.run())`, which runs until stop() or Ctrl-C/SIGTERM.",
                RuntimeWarning,
                stacklevel=1,
            )


def _on_signals(callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` on SIGINT or SIGTERM, through the running loop; return a function
    that puts the previous handlers back. Outside the main thread, nothing is caught."""
    loop = asyncio.get_running_loop()
    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    caught = []
    for signum in STOP_SIGNALS:
        try:
            loop.add_signal_handler(signum, callback)
        except (ValueError, RuntimeError, NotImplementedError):  # not the main thread
            break
        caught.append(signum)

    def restore() -> None:
        for signum in caught:
            with suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(signum)
                if previous[signum] is not None:  # None: not set from Python, nothing to restore
                    signal.signal(signum, previous[signum])

    return restore
