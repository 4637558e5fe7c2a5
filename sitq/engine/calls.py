"""What `enqueue_many` is given: calls described as data.

`sitq.call(func, *args, **kwargs)` describes one call; a tuple (func, args[, kwargs]) does
too. A malformed item is reported where it was made, at enqueue, with a message that says
how to fix it. (The checks of a single call, and turning it into a row, are
`sitq.engine.queue`'s.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sitq.errors import InvalidTaskError
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
