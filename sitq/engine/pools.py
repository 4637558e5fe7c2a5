"""Where plain-function tasks run: threads and processes that never keep a program alive.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits, so
a program whose worker still runs a long plain function, or that never called `stop()`,
would hang at exit. A task queue must not do that: a task that was cut off at exit runs
again elsewhere (at-least-once), so these threads are daemons, and exit ends them.

`ProcessPool` does the same for `executor="process"`: its children leave signals to the
worker, which alone decides how to stop, and they end with it (see `ProcessPool`).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing.context import BaseContext, DefaultContext
from multiprocessing.process import BaseProcess
from queue import SimpleQueue
from typing import Any, cast

_STOP = object()


class DaemonThreadPool(Executor):
    """A fixed-size pool of daemon threads, started as work arrives."""

    def __init__(self, max_workers: int, thread_name_prefix: str = "sitq-task") -> None:
        self.max_workers = max_workers
        self.prefix = thread_name_prefix
        self._jobs: SimpleQueue[Any] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot run a task on a pool that was shut down")
            self._jobs.put((future, fn, args, kwargs))
            if self._idle == 0 and len(self._threads) < self.max_workers:
                self._start_thread()
            else:
                self._idle -= 1
        return future

    def _start_thread(self) -> None:
        thread = threading.Thread(
            target=self._serve, name=f"{self.prefix}-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _serve(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            future, fn, args, kwargs = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # the caller decides what an error means
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shutdown = True
            threads = list(self._threads)
        for _ in threads:
            self._jobs.put(_STOP)
        if wait:
            for thread in threads:
                thread.join()


class ProcessPool(ProcessPoolExecutor):
    """A process pool whose children leave signals to the worker and end with it.

    A forked child inherits the worker's signal set-up: asyncio's handlers for SIGINT and
    SIGTERM, which swallow the signal, and its wake-up fd, through which a signal caught
    in the child is reported to the *worker's* event loop. So one Ctrl-C to the process
    group counted once per child (the second count exits at once), a child ended by the
    pool (SIGTERM) made the worker stop, and children ignored SIGTERM and outlived it.
    Each child therefore starts with `_prepare_child`: no wake-up fd, SIGINT ignored (the
    worker decides: finish, hand back, or exit), SIGTERM back to its default, and on Linux
    a SIGKILL when its parent ends, so even `os._exit` of the worker leaves no orphans.
    `kill()` ends the children at once when the worker stops.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        self._started = _StartedChildren(multiprocessing.get_context())
        super().__init__(
            max_workers,
            mp_context=cast(BaseContext, self._started),  # a stand-in, see _StartedChildren
            initializer=_prepare_child,
        )

    def kill(self) -> None:
        """Stop now: cancel the calls not started and kill every child, busy or idle. The
        worker has handed their tasks back (or lost them), so nothing they still compute
        could be stored; and `shutdown()` alone would make the interpreter wait for them
        at exit."""
        self.shutdown(wait=False, cancel_futures=True)
        for child in self._started.children:
            if child.is_alive():
                child.kill()


class _StartedChildren:
    """A multiprocessing context that remembers the processes started through it.

    `ProcessPoolExecutor` keeps its processes to itself (Python 3.14 adds
    `kill_workers()`), but it launches them through the context it is given: this
    stand-in passes everything to the real context and keeps the processes it starts.
    """

    def __init__(self, context: DefaultContext) -> None:
        self.context = context
        self.children: list[BaseProcess] = []

    def Process(self, *args: Any, **kwargs: Any) -> BaseProcess:  # the name the pool calls
        child: BaseProcess = self.context.Process(*args, **kwargs)
        self.children.append(child)
        return child

    def __getattr__(self, name: str) -> Any:
        return getattr(self.context, name)


PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _prepare_child() -> None:
    """Runs first in each pool process (see `ProcessPool`)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "linux":
        parent = os.getppid()
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # it ended between the two looks: nothing will kill us
            os._exit(1)
