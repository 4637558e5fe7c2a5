"""What `enqueue_many` is given: calls described as data.

`sitq.call(func, *args, **kwargs)` describes one call; a tuple (func, args[, kwargs]) does
too. Either becomes a `Call`, the plain triple (func, args, kwargs) that
`TaskQueue._enqueue_calls` takes (`enqueue` makes one directly). A malformed item is
reported where it was made, at enqueue, with a message that says how to fix it. What the
options of a call mean, and the `Plan` that turns calls of one function into rows, are
`sitq.options`'.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from sitq.errors import InvalidTaskError
from sitq.wire.serialization import TaskCall

#: One call to enqueue: the function, its positional and its keyword arguments.
Call = tuple[Any, tuple[Any, ...], dict[str, Any]]


def call(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskCall:
    """Describe one call for `enqueue_many`: `call(resize, "a.png", width=200)`."""
    return TaskCall(func, args, kwargs)


def as_call(item: TaskCall | tuple[Any, ...], index: int = 0) -> Call:
    if isinstance(item, TaskCall):
        return item.func, item.args, item.kwargs
    if isinstance(item, tuple) and 2 <= len(item) <= 3:
        func, args, *rest = item
        kwargs = rest[0] if rest else {}
        if isinstance(args, tuple | list) and isinstance(kwargs, dict):
            return func, tuple(args), dict(kwargs)
    raise InvalidTaskError(
        f"enqueue_many: item #{index} is {item!r}; each item is sitq.call(func, *args, "
        "**kwargs) or a tuple (func, args_tuple[, kwargs_dict]), e.g. (square, (5,))"
    )


def as_calls(items: Iterable[TaskCall | tuple[Any, ...]]) -> list[Call]:
    return [as_call(item, index) for index, item in enumerate(items)]


def describe(call: Call) -> str:
    func = call[0]
    return getattr(func, "__qualname__", None) or type(func).__name__
