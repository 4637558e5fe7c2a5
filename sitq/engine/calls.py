"""What `enqueue` is given: calls described as data, and the checks made on them.

`sitq.call(func, *args, **kwargs)` describes one call for `enqueue_many`. The checks here
run in the caller's process, at enqueue, so a mistake (a coroutine object instead of a
function, a malformed batch item, a task id that is not a string) is reported where it
was made, with a message that says how to fix it.
"""

from __future__ import annotations

import gc
import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from sitq.errors import InvalidTaskError, TaskNotFoundError
from sitq.options import TaskOptions, options_of, task_name
from sitq.policy import state
from sitq.wire.serialization import TaskCall


def call(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskCall:
    """Describe one call for `enqueue_many`: `call(resize, "a.png", width=200)`."""
    return TaskCall(func, args, kwargs)


def as_call(item: TaskCall | tuple[Any, ...], index: int = 0) -> TaskCall:
    if isinstance(item, TaskCall):
        return item
    if isinstance(item, tuple) and 2 <= len(item) <= 3:
        func, args, *rest = item
        kwargs = rest[0] if rest else {}
        if isinstance(args, tuple | list) and isinstance(kwargs, dict):
            return TaskCall(func, tuple(args), dict(kwargs))
    raise InvalidTaskError(
        f"enqueue_many: item #{index} is {item!r}; each item is sitq.call(func, *args, "
        "**kwargs) or a tuple (func, args_tuple[, kwargs_dict]), e.g. (square, (5,))"
    )


def as_calls(items: Iterable[TaskCall | tuple[Any, ...]]) -> list[TaskCall]:
    return [as_call(item, index) for index, item in enumerate(items)]


def describe(call: TaskCall) -> str:
    return getattr(call.func, "__qualname__", None) or type(call.func).__name__


def check_task_id(task_id: object) -> str:
    """Task ids are the strings `enqueue` returned; anything else is a typed error."""
    if not isinstance(task_id, str):
        raise TaskNotFoundError(
            f"task ids are strings (as enqueue() returned them), got {type(task_id).__name__}"
            f" {task_id!r}; for many tasks use queue.gather(ids)"
        )
    return task_id


def check_callable(func: Any) -> None:
    if inspect.iscoroutine(func):
        func.close()  # it will never run; closing avoids a "never awaited" warning
        raise InvalidTaskError(
            "enqueue got a coroutine object, i.e. the *result* of calling an async function. "
            "Pass the function and its arguments instead: enqueue(task, 1), not enqueue(task(1))"
        )
    if not callable(func):
        raise InvalidTaskError(
            f"enqueue needs a callable (a function), got {type(func).__name__} {func!r}. "
            "Pass the function itself, then its arguments: enqueue(task, 1, key=2)"
        )


def run_options(effective: TaskOptions) -> TaskOptions | None:
    """What the worker needs of the merged options (None when there is nothing to say):
    when to run, the task's name and its unique key are already columns of its row."""
    wanted = (effective.retry, effective.timeout, effective.executor, effective.name,
              effective.rate_limit)  # fmt: skip
    if wanted == (None, None, None, None, None):
        return None
    retry, timeout, executor, name, rate_limit = wanted
    return TaskOptions(retry=retry, timeout=timeout, executor=executor, name=name,
                       rate_limit=rate_limit)  # fmt: skip


#: Byte tables for `bytes.translate`: byte 6 of a version-4 UUID starts with the bits 0100
#: (the version), byte 8 with 10 (the RFC 4122 variant); the other bits stay random.
VERSION_4_BYTE = bytes((byte & 0x0F) | 0x40 for byte in range(256))
RFC_VARIANT_BYTE = bytes((byte & 0x3F) | 0x80 for byte in range(256))


def new_task_ids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs as text, from one read of the system's randomness:
    enqueue_many makes one per task, and a read per id would cost twice as much. The
    version and variant bits are set for all ids at once, through the tables above."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(VERSION_4_BYTE)
    raw[8::16] = raw[8::16].translate(RFC_VARIANT_BYTE)
    h = raw.hex()
    return [
        f"{h[at : at + 8]}-{h[at + 8 : at + 12]}-{h[at + 12 : at + 16]}-"
        f"{h[at + 16 : at + 20]}-{h[at + 20 : at + 32]}"
        for at in range(0, 32 * count, 32)
    ]


def with_options(call: TaskCall, options: TaskOptions | None) -> TaskCall:
    """The call with the options the worker needs (the same object when nothing changes)."""
    if options == call.options:
        return call
    return TaskCall(call.func, call.args, call.kwargs, options)


@dataclass(frozen=True)
class Plan:
    """What every call of one function in one enqueue shares: its options, merged once
    (the call's over the function's), what the worker needs of them, its name, and the
    columns its rows have in common (state, due time, enqueue time, priority, budget,
    unique key)."""

    func: Any
    options: TaskOptions
    run_options: TaskOptions | None
    name: str
    shared_columns: tuple[str, float, float, int, int | None, str | None, str | None]

    @classmethod
    def of(cls, func: Any, options: TaskOptions, now: float) -> Plan:
        """The plan for calls of `func` enqueued at `now` with `options`."""
        check_callable(func)
        effective = options.merged_over(options_of(func))
        budget: tuple[int | None, str | None] = (None, None)  # None: the worker's default
        if effective.retry is not None:
            budget = state.budget_of(effective.retry)
        due_at = effective.due_at(now)
        status = state.on_enqueue(due_at, now).value  # see NewTask.status
        shared = (status, due_at, now, effective.priority or 0, *budget, effective.unique_key)
        name = task_name(func, effective)
        return cls(func, effective, run_options(effective), name, shared)


def no_cycle_collection(rows: int) -> AbstractContextManager[None]:
    """Pause Python's cycle collector while a big batch of rows is built.

    Ten thousand rows are tens of thousands of new objects that all stay alive, so the
    collector would run again and again meanwhile, and may walk every object the program
    holds (a pause of tens of milliseconds in a big program). None of them can form a
    cycle, so there is nothing for it to find; it runs again as usual afterwards. A small
    batch (one enqueue) changes nothing and pays for no more than a `nullcontext`.
    """
    if rows < 1000 or not gc.isenabled():
        return nullcontext()
    return _collector_paused()


@contextmanager
def _collector_paused() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
