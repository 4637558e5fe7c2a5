"""Run one task call, wherever it belongs, under a time limit, and report what happened.

Async functions run on the worker's own event loop. Plain functions run in a thread pool
so they never block that loop (or in a process pool for CPU-bound work). Whatever the
task does, even `raise SystemExit`, comes back as an `Outcome` value: a task can fail,
but it cannot take the worker down with it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import traceback as tb
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import cloudpickle

from sitq.errors import SerializationError
from sitq.retry import TaskTimeout
from sitq.serialization import PICKLING_HINT, TaskCall


@dataclass(frozen=True)
class Outcome:
    """What one attempt produced: a value, or an error with its traceback."""

    value: Any = None
    error: BaseException | None = None
    traceback: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, error: BaseException) -> Outcome:
        text = "".join(tb.format_exception(type(error), error, error.__traceback__))
        return cls(error=error, traceback=text)


def is_async(func: Any) -> bool:
    """True for `async def` functions (also behind functools.partial or a callable object)."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - a callable object's async __call__
    )


async def run_call(
    call: TaskCall,
    *,
    timeout: float | None,
    threads: Executor | None,
    processes: Executor | None = None,
    executor: str | None = None,
) -> Outcome:
    """Run `call` and return its Outcome; a time limit becomes a `TaskTimeout` error."""
    if is_async(call.func) or executor == "async":
        work = _run_async(call)
    elif executor == "process":
        work = _run_in_process(call, processes)
    else:
        work = _run_in_thread(call, threads)
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        kind = "cancelled" if is_async(call.func) else "abandoned (a thread cannot be stopped)"
        error = TaskTimeout(timeout, f"task exceeded its time limit of {timeout:g}s and was {kind}")
        return Outcome.failed(error)


async def _run_async(call: TaskCall) -> Outcome:
    """Await the task inside this coroutine, so even SystemExit is caught here."""
    try:
        value = call.func(*call.args, **call.kwargs)
        if inspect.isawaitable(value):
            value = await value
        return Outcome(value=value)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # a task's SystemExit/KeyboardInterrupt must not kill us
        return Outcome.failed(exc)


async def _run_in_thread(call: TaskCall, threads: Executor | None) -> Outcome:
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()  # so current_task() works inside the thread
    job = functools.partial(context.run, _call_plain, call)
    try:
        value = await loop.run_in_executor(threads, job)
        if inspect.isawaitable(value):  # a plain function that returned a coroutine
            value = await value
        return Outcome(value=value)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return Outcome.failed(exc)


def _call_plain(call: TaskCall) -> Any:
    return call.func(*call.args, **call.kwargs)


async def _run_in_process(call: TaskCall, processes: Executor | None) -> Outcome:
    if processes is None:
        raise RuntimeError("executor='process' needs a worker with a process pool")
    try:
        blob = cloudpickle.dumps((call.func, call.args, call.kwargs))
    except Exception as exc:
        return Outcome.failed(
            SerializationError(
                f"cannot send {call.func!r} to a worker process: {exc}. Everything a process task "
                f"touches is pickled and copied to the other process. {PICKLING_HINT}"
            )
        )
    loop = asyncio.get_running_loop()
    try:
        return Outcome(value=await loop.run_in_executor(processes, _run_pickled, blob))
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return Outcome.failed(exc)


def _run_pickled(blob: bytes) -> Any:
    """Runs in the child process: unpickle the call and run it."""
    func, args, kwargs = cloudpickle.loads(blob)
    return func(*args, **kwargs)
