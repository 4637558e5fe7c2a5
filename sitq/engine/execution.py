"""Run one task call, wherever it belongs, under a time limit, and report what happened.

Async functions run on the worker's own event loop. Plain functions run in a thread pool
so they never block that loop (or in a process pool for CPU-bound work). Whatever the
task does, even `raise SystemExit`, comes back as an `Outcome` value: a task can fail,
but it cannot take the worker down with it. That holds for the objects a task hands back
too: an exception whose `__str__` raises SystemExit is described by `text_of`, never
`str()`-ed bare, and a thread or process returns its Outcome instead of raising through
an asyncio future (a GeneratorExit thrown into the awaiting coroutines would close them
instead of being caught).

A KeyboardInterrupt or SystemExit raised by a task, or by one of its objects, fails that
task. A real Ctrl-C never arrives that way: `sitq worker` turns SIGINT into a graceful
stop, `asyncio.run` turns it into a cancel, and process-pool children ignore it.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import pickle
import traceback as tb
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, cast

import cloudpickle

from sitq.errors import SerializationError
from sitq.policy.retry import TaskTimeout
from sitq.wire.serialization import PICKLING_HINT, TaskCall


@dataclass(frozen=True)
class Outcome:
    """What one attempt produced: a value, or an error with its traceback.

    `pool_broken`: the error is the process pool's (the child running the call died, and
    the pool failed every call it held), not something the task raised.
    """

    value: Any = None
    error: BaseException | None = None
    traceback: str | None = None
    pool_broken: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def failed(cls, error: BaseException) -> Outcome:
        return cls(error=error, traceback=traceback_of(error))


def text_of(error: BaseException) -> str:
    """`str(error)`, or a description when the task's own __str__ raises (even SystemExit)."""
    try:
        return str(error)
    except BaseException as exc:  # the task's object, not the worker, is broken
        return f"<{type(error).__name__} whose __str__ raised {type(exc).__name__}>"


def traceback_of(error: BaseException) -> str:
    """The formatted traceback; without the exception's own text if formatting it raises
    (the traceback module copes with an Exception from __str__, not with SystemExit)."""
    try:
        return "".join(tb.format_exception(type(error), error, error.__traceback__))
    except BaseException:
        frames = "".join(tb.format_tb(error.__traceback__))
        last = f"{type(error).__name__}: {text_of(error)}"
        return f"Traceback (most recent call last):\n{frames}{last}\n"


def is_async(func: Any) -> bool:
    """True for `async def` functions (also behind functools.partial or a callable object)."""
    code = getattr(func, "__code__", None)
    if code is not None and code.co_flags & inspect.CO_COROUTINE:
        return True  # a plain `async def` function, the usual case: nothing to unwrap
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
    outcome = await loop.run_in_executor(threads, job)
    if not (outcome.ok and inspect.isawaitable(outcome.value)):
        return outcome
    try:  # a plain function that returned a coroutine: await it here, on the loop
        return Outcome(value=await outcome.value)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:
        return Outcome.failed(exc)


def _call_plain(call: TaskCall) -> Outcome:
    """Runs in the thread: whatever the task raises comes back as a value (see the module
    docstring: a GeneratorExit raised through the future would escape the worker)."""
    try:
        return Outcome(value=call.func(*call.args, **call.kwargs))
    except BaseException as exc:
        return Outcome.failed(exc)


async def _run_in_process(call: TaskCall, processes: Executor | None) -> Outcome:
    if processes is None:
        raise RuntimeError("executor='process' needs a worker with a process pool")
    try:
        blob = cloudpickle.dumps((call.func, call.args, call.kwargs))
    except BaseException as exc:  # even a __reduce__ that raises SystemExit fails only the task
        name = getattr(call.func, "__qualname__", type(call.func).__name__)
        return Outcome.failed(
            SerializationError(
                f"cannot send {name} to a worker process: {_pickling_raised(exc)}. Everything "
                f"a process task touches is pickled and copied to the other process. "
                f"{PICKLING_HINT}"
            )
        )
    loop = asyncio.get_running_loop()
    try:
        packed = await loop.run_in_executor(processes, _run_pickled, blob)
    except asyncio.CancelledError:
        raise
    except BaseException as exc:  # the pool broke (a child died): BrokenProcessPool
        return Outcome(error=exc, traceback=traceback_of(exc), pool_broken=True)
    try:
        return cast(Outcome, cloudpickle.loads(packed))
    except BaseException as exc:
        return Outcome.failed(
            SerializationError(
                f"the task's result from the worker process could not be unpickled here: "
                f"unpickling raised {type(exc).__name__}: {text_of(exc)}"
            )
        )


def _run_pickled(blob: bytes) -> bytes:
    """Runs in the child process: unpickle the call, run it, send back its pickled Outcome.

    The call runs in an empty context: a forked child inherits the context of the task that
    started the pool, and `current_task()` must not name that other task. The value goes
    back with cloudpickle, as from a thread, so both executors accept the same values. An
    error goes back inside the Outcome, with the child's traceback as text, never raised
    through the pool (see the module docstring).
    """
    try:
        func, args, kwargs = cloudpickle.loads(blob)
        value = contextvars.Context().run(func, *args, **kwargs)
    except BaseException as exc:
        outcome = Outcome(error=_sendable(exc), traceback=traceback_of(exc))
        return cast(bytes, cloudpickle.dumps(outcome))  # cloudpickle has no type hints
    try:
        return cast(bytes, cloudpickle.dumps(Outcome(value=value)))
    except BaseException as exc:
        error = SerializationError(
            f"cannot send the task's return value of type {type(value).__name__} back from "
            f"the worker process: {_pickling_raised(exc)}. {PICKLING_HINT}"
        )
        return cast(bytes, cloudpickle.dumps(Outcome(error=error, traceback=traceback_of(exc))))


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
