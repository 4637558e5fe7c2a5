"""Task options, kept apart from a task's own arguments.

`queue.enqueue(func, *args, **kwargs)` passes every keyword to the task: a task with a
parameter called `timeout`, `delay` or `retry` still receives it. Options travel on
another path, so they can never collide with the task's arguments:

- per function: `@sitq.task(retry=..., timeout=...)` (the function stays callable as is);
- per call: `await queue.with_options(delay=5, retry=...).enqueue(func, *args, **kwargs)`;
  `after=[id, ...]` (per call only) makes the task wait for those tasks to succeed;
- per worker: `Worker(..., retry=...)` as the default for tasks that set nothing.

A per-call option beats the function's, which beats the worker's.
"""

from __future__ import annotations

import datetime as dt
import difflib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar, Unpack, overload

from sitq.errors import InvalidOptionError, InvalidTaskError
from sitq.policy import rate_limits, state

if TYPE_CHECKING:
    from sitq.policy.retry import RetryPolicy

Executor = Literal["async", "thread", "process"]
EXECUTORS = ("async", "thread", "process")
F = TypeVar("F", bound=Callable[..., Any])
OPTIONS_ATTRIBUTE = "__sitq_options__"


@dataclass(frozen=True)
class TaskOptions:
    """How to run a task, as opposed to what to run it with. None means "not set here".

    delay: seconds from now before the task is due; eta: the moment it is due (an aware
    datetime or epoch seconds; give one or the other); priority: higher runs first among
    due tasks; retry: a RetryPolicy; timeout: seconds an attempt may run; executor: where
    a plain function runs ("thread", default, or "process"); name: the task's name in
    history, status and circuit breakers (default: the function's qualified name);
    unique_key: while a task with this key is unfinished, enqueueing another returns its
    id instead (the key is free again once it finishes); rate_limit: at most so many
    starts of this task's name per period across all workers, e.g. "10/s"
    (`sitq.policy.rate_limits`; usually set with `@task`, or `Worker(rate_limits=...)`);
    after: ids of tasks that must all succeed first (a list, or one id): the task waits
    blocked until then, and is cancelled, naming the parent, if one fails for good or is
    cancelled (`sitq.policy.state.after_parents`).
    """

    delay: float | None = None
    eta: dt.datetime | float | None = None
    priority: int | None = None
    retry: RetryPolicy | None = None
    timeout: float | None = None
    executor: Executor | None = None
    name: str | None = None
    unique_key: str | None = None
    rate_limit: str | None = None
    after: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.after is not None:
            object.__setattr__(self, "after", parent_ids(self.after))
        optional_seconds("delay", self.delay, allow_zero=True)
        optional_seconds("timeout", self.timeout)
        if self.delay is not None and self.eta is not None:
            raise InvalidOptionError("give either delay= or eta=, not both")
        if self.eta is not None:
            _eta_timestamp(self.eta)
        _check_priority(self.priority)
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise InvalidOptionError(
                f"name must be a non-empty str (the task's name in history and breakers), "
                f"got {self.name!r}"
            )
        if self.executor is not None and self.executor not in EXECUTORS:
            raise InvalidOptionError(
                f"executor must be one of {', '.join(EXECUTORS)}; got {self.executor!r}"
            )
        _check_unique_key(self.unique_key)
        if self.rate_limit is not None:
            rate_limits.parse(self.rate_limit)
        if self.retry is not None and not hasattr(self.retry, "next_delay"):
            raise InvalidOptionError(
                f"retry must be a sitq.RetryPolicy, got {type(self.retry).__name__}"
            )

    @classmethod
    def from_keywords(cls, options: Mapping[str, Any]) -> TaskOptions:
        """Options given as keywords (`with_options(...)`, `@task(...)`), with a clear
        error for a name that is not an option: `retries=3` says to write `retry=`."""
        known = [f.name for f in fields(cls)]
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"did you mean {close[0]}=? " if close else ""
                raise InvalidOptionError(
                    f"{name}= is not a task option; {hint}the options are {', '.join(known)}. "
                    "(A task's own arguments go to enqueue(func, *args, **kwargs).)"
                )
        return cls(**options)

    def merged_over(self, base: TaskOptions | None) -> TaskOptions:
        """These options, with anything unset taken from `base`."""
        if base is None:
            return self
        changes = {f.name: getattr(self, f.name) for f in fields(self)}
        changes = {k: v for k, v in changes.items() if v is not None}
        return replace(base, **changes)

    def due_at(self, now: float) -> float:
        """When a task enqueued at `now` with these options becomes due."""
        if self.eta is not None:
            return _eta_timestamp(self.eta)
        return now + (self.delay or 0.0)


class OptionValues(TypedDict, total=False):
    """The keywords `with_options(...)` and `@task(...)` take, for the type checker: a
    misspelt option (`retries=3`, `dealy=5`) is flagged in the editor, not only when the
    line runs. Each means what the `TaskOptions` field of the same name means; None, as
    there, means "not set here"."""

    delay: float | None
    eta: dt.datetime | float | None
    priority: int | None
    retry: RetryPolicy | None
    timeout: float | None
    executor: Executor | None
    name: str | None
    unique_key: str | None
    rate_limit: str | None
    after: Sequence[str] | str | None


def parent_ids(after: object) -> tuple[str, ...]:
    """`after=` as a tuple of distinct ids, in order: a list (tuple, set) of ids, or one id."""
    items = (after,) if isinstance(after, str) else after
    if not isinstance(items, list | tuple | set | frozenset) or not all(
        isinstance(i, str) and i for i in items
    ):
        raise InvalidOptionError(
            f"after= takes the ids of the tasks to wait for, as enqueue() returned them "
            f"(a list of ids, or one id), e.g. after=[first_id]; got {after!r}"
        )
    return tuple(dict.fromkeys(items))


#: Priorities are stored as 64-bit integers (SQLite INTEGER, PostgreSQL BIGINT).
PRIORITY_RANGE = (-(2**63), 2**63 - 1)


#: The longest unique key, in characters: a key names a piece of work ("invoice-42"), and
#: an index entry stays small.
MAX_UNIQUE_KEY = 200


def _check_unique_key(key: object) -> None:
    if key is None:
        return
    if not isinstance(key, str):
        raise InvalidOptionError(
            f"unique_key must be a str naming the work, e.g. 'invoice-42'; got "
            f"{type(key).__name__} {key!r} (write str(...) if it is a number)"
        )
    if not key.strip() or "\x00" in key:
        raise InvalidOptionError(
            f"unique_key must be a non-empty str without NUL characters, e.g. 'invoice-42'; "
            f"got {key!r}"
        )
    if len(key) > MAX_UNIQUE_KEY:
        raise InvalidOptionError(
            f"unique_key is {len(key)} characters long, over the limit of {MAX_UNIQUE_KEY}: "
            "use a shorter name for the work (or a hash of a long one)"
        )


def _check_priority(priority: object) -> None:
    if priority is None:
        return
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise InvalidOptionError(
            f"priority must be a whole number (higher runs first), got {priority!r}"
        )
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise InvalidOptionError(
            f"priority {priority} is out of range: it must fit in 64 bits ({low} to {high}); "
            "small numbers such as 0, 1, 10 are plenty"
        )


def seconds_setting(name: str, value: object, *, allow_zero: bool = False) -> float:
    """A setting in seconds as a float: a finite number > 0 (>= 0 with `allow_zero`), or an
    InvalidOptionError naming the setting. Shared by task options and the backends."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptionError(f"{name} must be a number of seconds, got {value!r}")
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidOptionError(f"{name} must be a finite number of seconds {bound}, got {value}")
    return float(value)


def optional_seconds(name: str, value: object, *, allow_zero: bool = False) -> float | None:
    """`seconds_setting` for a setting that may be None (off, or "use the default")."""
    return None if value is None else seconds_setting(name, value, allow_zero=allow_zero)


def count_setting(name: str, value: object) -> int:
    """A whole number >= 1 (a concurrency, a number of processes), or an InvalidOptionError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"{name} must be a whole number >= 1, got {value!r}")
    return value


def concurrency_setting(concurrency: object, max_concurrency: object, default: int = 10) -> int:
    """A worker's concurrency, given as `concurrency` or its alias `max_concurrency`."""
    if concurrency is not None and max_concurrency is not None:
        raise InvalidOptionError("give concurrency= or its alias max_concurrency=, not both")
    chosen = concurrency if concurrency is not None else max_concurrency
    return count_setting("concurrency", default if chosen is None else chosen)


def _eta_timestamp(eta: dt.datetime | float) -> float:
    if isinstance(eta, dt.datetime):
        if eta.tzinfo is None:
            raise InvalidOptionError(
                "eta must be timezone-aware (e.g. datetime.now(timezone.utc) + timedelta(...)),"
                " so that every worker reads the same moment"
            )
        return eta.timestamp()
    if isinstance(eta, bool) or not isinstance(eta, int | float) or not math.isfinite(eta):
        raise InvalidOptionError(f"eta must be an aware datetime or epoch seconds, got {eta!r}")
    return float(eta)


@overload
def task(func: F, /, **options: Unpack[OptionValues]) -> F: ...
@overload
def task(func: None = None, /, **options: Unpack[OptionValues]) -> Callable[[F], F]: ...
def task(func: F | None = None, /, **options: Unpack[OptionValues]) -> F | Callable[[F], F]:
    """Attach default options to a task function: `@task(retry=..., timeout=30)`.

    The function is returned unchanged (callable directly, as before, with its own
    signature for the type checker); the options ride along as an attribute, which
    cloudpickle carries with notebook-defined functions too.
    """
    chosen = TaskOptions.from_keywords(options)
    if chosen.after is not None:
        raise InvalidOptionError(
            "after= names tasks of one enqueue, not of every call of a function: give it "
            "per call, queue.with_options(after=[id]).enqueue(...)"
        )

    def attach(f: F) -> F:
        setattr(f, OPTIONS_ATTRIBUTE, chosen)
        return f

    return attach(func) if func is not None else attach


def options_of(func: Any) -> TaskOptions | None:
    """The options a function was decorated with, if any."""
    found = getattr(func, OPTIONS_ATTRIBUTE, None)
    return found if isinstance(found, TaskOptions) else None


def task_name(func: Any, options: TaskOptions | None = None) -> str:
    """The name a task is known by: an explicit option, else the function's qualname."""
    if options is not None and options.name:
        return options.name
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
    if name is None and hasattr(func, "func"):  # functools.partial
        return task_name(func.func)
    return name or type(func).__name__


def resolve(func: Any, options: TaskOptions, now: float) -> tuple[TaskOptions, float, str]:
    """What enqueueing `func` at `now` with `options` means: the options in effect (these
    over the function's own, from `@sitq.task`), when the task is due, and its name."""
    effective = options.merged_over(options_of(func))
    return effective, effective.due_at(now), task_name(func, effective)


#: Nothing set: what a plain `queue.enqueue(f, ...)` passes (made once; it is immutable).
NO_OPTIONS = TaskOptions()


# -- one enqueue's plan: the options of its calls, resolved once per function -------------


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
        effective, due_at, name = resolve(func, options, now)
        budget: tuple[int | None, str | None] = (None, None)  # None: the worker's default
        if effective.retry is not None:
            budget = state.budget_of(effective.retry)
        status = state.on_enqueue(due_at, now).value  # see NewTask.status
        shared = (status, due_at, now, effective.priority or 0, *budget, effective.unique_key)
        return cls(func, effective, run_options(effective), name, shared)
