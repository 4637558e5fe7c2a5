"""Which errors are which: the exceptions sitq gives meaning to, and how a policy
recognises an error (by class, by class *name*, or by a predicate).

Recognising by name lets a policy match your own `TransientError` class without importing
it: `retry_on="TransientError"` compares against every class in the error's MRO.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

#: One way to recognise an error: its class, its class name, or a predicate `exc -> bool`.
ErrorTest = type[BaseException] | str | Callable[[BaseException], bool]
#: What retry_on / give_up_on accept: one ErrorTest, a list or tuple of them, or None.
ErrorSpec = ErrorTest | Sequence[ErrorTest] | None


class TransientError(Exception):
    """Raise this for a failure that may well pass if tried again (a timeout, a 503)."""


class PermanentError(Exception):
    """Raise this for a failure that retrying cannot fix (bad input): never retried."""


class Retry(Exception):
    """Raise `Retry(delay=5.0)` from a task to ask for another attempt after 5 seconds.

    The task knows best when, e.g. from a rate limit's Retry-After header. `delay=None`
    keeps the policy's own delay. It still needs an attempt left in the policy's budget.
    """

    def __init__(self, delay: float | None = None, message: str | None = None) -> None:
        if delay is not None:
            delay = as_seconds("Retry delay", delay)
        self.delay = delay
        self.message = message
        when = "after the policy's delay" if delay is None else f"in {delay:g}s"
        super().__init__(message or f"task asked to be retried {when}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions are re-created from their args when unpickled (e.g. coming back from
        # a process pool); ours are (delay, message), not the single text Exception keeps.
        return (type(self), (self.delay, self.message))


class TaskTimeout(Exception):
    """An attempt ran longer than its time limit; `limit` holds that limit in seconds.

    `TaskTimeout(30)` writes its own message, `TaskTimeout(30, "text")` uses yours, and
    `TaskTimeout("text")` is accepted too (then set `.limit` yourself).
    """

    def __init__(self, limit: float | str | None = None, message: str | None = None) -> None:
        if isinstance(limit, str):  # TaskTimeout("message"): no limit given (yet)
            limit, message = None, limit
        self.limit = limit
        default = "task exceeded its time limit"
        if limit is not None:
            default += f" of {limit:g}s"
        super().__init__(message or default)


class WorkerLost(Exception):
    """The worker running the attempt died (or stopped renewing its lease) mid-task."""


@dataclass(frozen=True)
class ErrorMatcher:
    """One test for "does this exception belong to the list?", built once from an ErrorSpec.

    Names are compared with every class in the exception's MRO, so a user's own class
    called `TransientError` matches the name "TransientError" without subclassing ours.
    """

    types: tuple[type[BaseException], ...] = ()
    names: frozenset[str] = frozenset()
    predicates: tuple[Callable[[BaseException], bool], ...] = ()

    def __call__(self, exc: BaseException) -> bool:
        if isinstance(exc, self.types):
            return True
        mro = type(exc).__mro__
        if any(c.__name__ in self.names or _dotted(c) in self.names for c in mro):
            return True
        return any(predicate(exc) for predicate in self.predicates)


def error_matcher(spec: ErrorSpec, what: str = "retry_on") -> ErrorMatcher | None:
    """Normalise a retry_on / give_up_on value; None stays None ("no list given")."""
    if spec is None:
        return None
    items = spec if isinstance(spec, list | tuple | set | frozenset) else (spec,)
    types, names, predicates = [], [], []
    for item in items:
        if isinstance(item, type) and issubclass(item, BaseException):
            types.append(item)
        elif isinstance(item, str):
            names.append(item)
        elif callable(item) and not isinstance(item, type):
            predicates.append(item)
        else:
            raise TypeError(
                f"{what} takes exception classes, class names (str) or a predicate "
                f"`exc -> bool` (or a list of them); got {item!r}"
            )
    return ErrorMatcher(tuple(types), frozenset(names), tuple(predicates))


def _dotted(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def is_number(value: object) -> TypeGuard[float]:  # ints count as floats, as for type checkers
    return isinstance(value, int | float) and not isinstance(value, bool)


def as_seconds(what: str, value: object) -> float:
    """`value` as float seconds, or a ValueError that says what is wrong with it."""
    if not (is_number(value) and math.isfinite(value) and value >= 0):
        raise ValueError(
            f"{what} must be a finite number of seconds >= 0 (e.g. 1.5); got {value!r}"
        )
    return float(value)
