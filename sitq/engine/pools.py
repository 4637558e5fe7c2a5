"""Where plain-function tasks run: threads and processes that never keep a program alive,
and how a call crosses into a process and its result back.

`concurrent.futures.ThreadPoolExecutor` joins its threads when the interpreter exits, so
a program whose worker still runs a long plain function, or that never called `stop()`,
would hang at exit. A task queue must not do that: a task that was cut off at exit runs
again elsewhere (at-least-once), so these threads are daemons, and exit ends them.

`ProcessPool` does the same for `executor="process"`: its children leave signals to the
worker, which alone decides how to stop, and they end with it (see `ProcessPool`).
`run_in_thread` and `run_in_process` send a call there and bring back what it did, as
data: an error comes back inside a value, with its traceback as text, never raised through
the future (a GeneratorExit thrown into the awaiting coroutines would close them instead of
being caught).
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import inspect
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from multiprocessing.context import BaseContext, DefaultContext
from multiprocessing.process import BaseProcess
from queue import SimpleQueue
from typing import Any, cast

import cloudpickle

from sitq.errors import SerializationError, text_of, traceback_of
from sitq.wire.serialization import PICKLING_HINT, TaskCall

#: What a call in a process did: (value, error, traceback); error None when it returned.
Returned = tuple[Any, BaseException | None, str | None]

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


async def run_in_thread(call: TaskCall, threads: Executor) -> Returned:
    """Run `call` in a thread of `threads`, with the caller's context (so `current_task()`
    works there); a coroutine it returns is awaited here, on the loop."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    value, error, traceback = await loop.run_in_executor(threads, context.run, _call_plain, call)
    if error is not None or not inspect.isawaitable(value):
        return value, error, traceback
    try:
        return await value, None, None
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return None, exc, traceback_of(exc)


def _call_plain(call: TaskCall) -> Returned:
    """Runs in the thread: whatever the task raises comes back as a value."""
    try:
        return call.func(*call.args, **call.kwargs), None, None
    except BaseException as exc:
        return None, exc, traceback_of(exc)


class Processes:
    """A worker's pool for `executor="process"`: started by the first such task, and
    replaced when a child dies (`os._exit`, a crash). A dead child breaks the whole pool:
    every call it held fails with BrokenProcessPool, the one that killed it and its
    neighbours alike. So each of those calls runs once more in a process of its own: a
    neighbour then succeeds, and the culprit fails alone, with BrokenProcessPool."""

    def __init__(self, size: int | None) -> None:
        self.size = size
        self.pool: ProcessPool | None = None

    async def run(self, call: TaskCall) -> Returned:
        if self.pool is None:
            self.pool = ProcessPool(self.size)
        pool = self.pool
        try:
            return await run_in_process(call, pool)
        except asyncio.CancelledError:
            raise
        except BaseException:  # the pool broke: the next task starts a new one
            if pool is self.pool:
                self.pool = None
                pool.kill()
        alone = ProcessPool(1)
        try:
            return await run_in_process(call, alone)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # it broke again: this call is the culprit
            return None, exc, traceback_of(exc)
        finally:
            alone.kill()

    def kill(self) -> None:
        if self.pool is not None:
            self.pool.kill()
            self.pool = None


async def run_in_process(call: TaskCall, processes: Executor | None) -> Returned:
    """Run `call` in a pool process. Raises only when the pool itself broke (a child
    died: BrokenProcessPool), which fails every call the pool held, not only this one."""
    if processes is None:
        raise RuntimeError("executor='process' needs a worker with a process pool")
    try:
        blob = cloudpickle.dumps((call.func, call.args, call.kwargs))
    except BaseException as exc:  # even a __reduce__ that raises SystemExit fails only the task
        name = getattr(call.func, "__qualname__", type(call.func).__name__)
        unsent = SerializationError(
            f"cannot send {name} to a worker process: {_pickling_raised(exc)}. Everything "
            f"a process task touches is pickled and copied to the other process. {PICKLING_HINT}"
        )
        return None, unsent, traceback_of(unsent)
    packed = await asyncio.get_running_loop().run_in_executor(processes, _run_pickled, blob)
    try:
        return cast(Returned, cloudpickle.loads(packed))
    except BaseException as exc:
        unread = SerializationError(
            f"the task's result from the worker process could not be unpickled here: "
            f"unpickling raised {type(exc).__name__}: {text_of(exc)}"
        )
        return None, unread, traceback_of(unread)


def _run_pickled(blob: bytes) -> bytes:
    """Runs in the child process: unpickle the call, run it, send back what it did, pickled.

    The call runs in an empty context: a forked child inherits the context of the task that
    started the pool, and `current_task()` must not name that other task. The value goes
    back with cloudpickle, as from a thread, so both executors accept the same values.
    """
    try:
        func, args, kwargs = cloudpickle.loads(blob)
        value = contextvars.Context().run(func, *args, **kwargs)
    except BaseException as exc:
        return cast(bytes, cloudpickle.dumps((None, _sendable(exc), traceback_of(exc))))
    try:
        return cast(bytes, cloudpickle.dumps((value, None, None)))
    except BaseException as exc:
        error = SerializationError(
            f"cannot send the task's return value of type {type(value).__name__} back from "
            f"the worker process: {_pickling_raised(exc)}. {PICKLING_HINT}"
        )
        return cast(bytes, cloudpickle.dumps((None, error, traceback_of(exc))))


def _pickling_raised(exc: BaseException) -> str:
    """What a failed pickling said; named as such when it raised more than an Exception."""
    if isinstance(exc, Exception):
        return text_of(exc)
    return f"pickling raised {type(exc).__name__}: {text_of(exc)}"


def _sendable(error: BaseException) -> BaseException:
    """`error` if it survives pickling, else a stand-in that does.

    Pickle rebuilds an exception as `type(error)(*error.args)`, which fails for an __init__
    with other parameters (`def __init__(self, code, reason)`). The pool cannot read such
    an error back and breaks, failing every task it holds; `_ErrorInTransit` rebuilds the
    same exception without calling __init__ instead.
    """
    for candidate in (error, _ErrorInTransit(error)):
        try:
            pickle.loads(pickle.dumps(candidate))
            return candidate
        except BaseException:  # even SystemExit from the error's own __reduce__
            continue
    return SerializationError(
        f"the task raised {type(error).__name__}: {text_of(error)}, which cannot be sent back "
        f"from the worker process. {PICKLING_HINT}"
    )


class _ErrorInTransit(Exception):
    """Carries an exception from a worker process; unpickles as the original exception."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(f"{type(error).__name__}: {text_of(error)}")
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        error = self.error
        return (_rebuild_error, (type(error), error.args, vars(error)))


def _rebuild_error(
    cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]
) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error
