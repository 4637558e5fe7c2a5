"""Where plain-function tasks run: threads that never keep a program from exiting.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits, so
a program whose worker still runs a long plain function, or that never called `stop()`,
would hang at exit. A task queue must not do that: a task that was cut off at exit runs
again elsewhere (at-least-once), so these threads are daemons, and exit ends them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from queue import SimpleQueue
from typing import Any

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
