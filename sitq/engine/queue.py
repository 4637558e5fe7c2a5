"""TaskQueue: the client side. Enqueue calls and wait for their results.

A TaskQueue never runs tasks; a `Worker` does. Both talk to the same backend, and when they
share one backend object (as in the tutorial) a worker hears about new work at once. This
module is a task's first and last step: checking the call and turning it into a row
(`Plan`, `_new_task`), and reading the row back as a `Result`. Inspecting and repairing a
queue (status, history, dead letters, requeue, cancel, prune) is `sitq.engine.control`'s.
The checks run in the caller's process, at enqueue, so a mistake (a coroutine object
instead of a function, a task id that is not a string) is reported where it was made,
with a message that says how to fix it.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, ParamSpec, TypeVar, Unpack, overload

from sitq.backends import as_backend
from sitq.backends.base import Backend, NewTask, first_of
from sitq.clock import Clock, SystemClock
from sitq.engine import dependencies
from sitq.engine.calls import Call, as_calls, describe
from sitq.engine.control import QueueControl
from sitq.engine.schedules import QueueSchedules, ScheduleKeywords
from sitq.errors import (
    InvalidOptionError,
    InvalidTaskError,
    PayloadTooLargeError,
    QueueClosedError,
    SerializationError,
    TaskNotFoundError,
)
from sitq.options import NO_OPTIONS, OptionValues, Plan, TaskOptions
from sitq.overview import ScheduleInfo
from sitq.task import TERMINAL, Result, TaskId, TaskInfo, TaskStatus, check_task_id, new_task_ids
from sitq.views.live_hook import LiveDisplay
from sitq.wire.serialization import DumpsLoads, Serializer, TaskCall, as_serializer

DEFAULT_MAX_PAYLOAD = 10 * 1024 * 1024
FIRST_POLL = 0.02  # seconds; waits for results double this up to the backend's poll interval
P = ParamSpec("P")  # a task function's parameters: enqueue checks the arguments against them
R = TypeVar("R")  # what it returns: the id it gets remembers it, so its Result does too


class TaskQueue(QueueControl, LiveDisplay, QueueSchedules):
    """Enqueue tasks and read their results, status and history.

    backend: where tasks live (e.g. `SQLiteBackend("queue.db")`). serializer: how calls
    and results become bytes (default `CloudpickleSerializer()`; an object with only dumps
    and loads, as the original sitq took, is adapted). clock: the time source
    for enqueue times and delays (a `FakeClock` in tests). max_payload_bytes: refuse calls
    whose serialized size exceeds this.
    """

    def __init__(
        self,
        backend: Backend | str,
        serializer: Serializer | DumpsLoads | None = None,
        *,
        clock: Clock | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self.backend: Backend = as_backend(backend)
        self.serializer: Serializer = as_serializer(serializer)
        self.clock: Clock = clock or SystemClock()
        self.max_payload_bytes = max_payload_bytes
        self._open = False
        self._closed = False

    def __repr__(self) -> str:
        return f"TaskQueue({self.backend!r}, {self.serializer!r})"

    # -- lifecycle -------------------------------------------------------------------------

    async def connect(self) -> TaskQueue:
        """Open the backend (creating its tables on first use).

        Optional: the first call that needs the database connects by itself, as in the
        original sitq. `close()` (or leaving `async with`) ends the queue for good.
        """
        if self._closed:
            raise QueueClosedError(
                "this TaskQueue was closed and cannot be reused: make a new TaskQueue"
            )
        if not self._open:
            await self.backend.connect()
            self._open = True
        return self

    async def close(self) -> None:
        if self._open:
            self._open = False
            await self.backend.close()
        self._closed = True

    async def __aenter__(self) -> TaskQueue:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _ready(self) -> None:
        """Connect on first use; a closed queue says so."""
        if not self._open:
            await self.connect()

    # -- enqueueing ------------------------------------------------------------------------

    @overload
    async def enqueue(
        self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskId[R]: ...
    @overload
    async def enqueue(
        self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskId[R]: ...
    async def enqueue(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskId[Any]:
        """Queue `func(*args, **kwargs)` and return its task id.

        Every keyword goes to the task. For delay, retry, timeout and other options use
        `queue.with_options(...).enqueue(...)` or the `@sitq.task(...)` decorator. A type
        checker checks the arguments against `func`'s signature, and the id remembers what
        `func` returns (an `async def` function's awaited value).
        """
        [task_id] = await self._enqueue_calls([(func, args, kwargs)], NO_OPTIONS)
        return TaskId(task_id)

    async def enqueue_many(self, calls: Iterable[TaskCall | tuple[Any, ...]]) -> list[str]:
        """Queue many calls in one transaction (all or none); ids come back in order.

        Each item is `sitq.call(func, *args, **kwargs)` or a tuple (func, args[, kwargs]).
        """
        return await self._enqueue_calls(as_calls(calls), NO_OPTIONS)

    def with_options(self, **options: Unpack[OptionValues]) -> OptionsView:
        """Set options for the next enqueue: `queue.with_options(delay=5).enqueue(f, x)`.

        A name that is not an option (`retries=3`) raises InvalidOptionError naming the
        option meant (`retry`); a type checker flags it before the code runs."""
        return OptionsView(self, TaskOptions.from_keywords(options))

    async def chain(self, *calls: TaskCall | tuple[Any, ...]) -> list[str]:
        """Queue a pipeline: each call waits for the one before it to succeed (all stored
        or none; the ids come back in order). A failing step cancels the steps after it,
        each error naming the step it waited for (`sitq.engine.dependencies`)."""
        return await self._enqueue_calls(as_calls(calls), NO_OPTIONS, chained=True)

    async def _enqueue_calls(
        self, calls: Sequence[Call], options: TaskOptions, *, chained: bool = False
    ) -> list[str]:
        await self._ready()
        rows: list[NewTask] = []
        plans: dict[int, Plan] = {}  # by id(func): a batch repeats a few functions
        keyed = False  # some call has a unique key: the key's holder may answer for it
        try:
            with no_cycle_collection(len(calls)):
                task_ids = new_task_ids(len(calls))
                now = self.clock.now()
                for one, task_id in zip(calls, task_ids, strict=True):
                    func = one[0]
                    plan = plans.get(id(func))
                    if plan is None or plan.func is not func:
                        plan = plans[id(func)] = Plan.of(func, options, now)
                        keyed = keyed or plan.options.unique_key is not None
                    rows.append(self._new_task(one, plan, task_id))
        except (InvalidTaskError, InvalidOptionError, PayloadTooLargeError,
                SerializationError) as exc:  # fmt: skip
            if len(calls) == 1:
                raise
            culprit = calls[len(rows)]  # the batch names the call that spoiled it
            raise type(exc)(
                f"enqueue_many: call #{len(rows)} ({describe(culprit)}): {exc}"
            ) from exc
        if keyed:
            if chained or options.after is not None:  # a held key's id waits for no parent
                raise InvalidOptionError(
                    "unique_key= does not go with after= or chain(): enqueue the unique task, "
                    "then the others after=[its id]"
                )
            return await self.backend.add_unique_tasks(rows)  # a held key: the holder's id
        if rows and (chained or options.after is not None):
            await dependencies.add_after(self.backend, rows, options.after or (), chained)
        elif rows:
            await self.backend.add_tasks(rows)
        return [row.task_id for row in rows]

    def _new_task(self, call: Call, plan: Plan, task_id: str) -> NewTask:
        """Serialize one call, with the options the worker needs of `plan`, into a row.
        The id comes first: a signed payload is bound to its id."""
        func, args, kwargs = call
        task_call = TaskCall(func, args, kwargs, plan.run_options)
        payload = self.serializer.encode_call(task_call, task_id=task_id)
        if len(payload) > self.max_payload_bytes:
            raise PayloadTooLargeError(
                f"task {plan.name!r} serializes to {len(payload):,} bytes, over the "
                f"limit of {self.max_payload_bytes:,}: store big data in a file or database "
                "and pass its path or key, or raise TaskQueue(max_payload_bytes=...)"
            )
        return NewTask._make((task_id, plan.name, payload, *plan.shared_columns))

    # -- results ---------------------------------------------------------------------------

    @overload
    async def get_result(
        self, task_id: TaskId[R], timeout: float | None = None
    ) -> Result[R] | None: ...
    @overload
    async def get_result(
        self, task_id: str, timeout: float | None = None
    ) -> Result[Any] | None: ...
    async def get_result(self, task_id: str, timeout: float | None = None) -> Result[Any] | None:
        """Wait up to `timeout` seconds (None: forever) for the task to finish.

        Returns the Result once the task succeeded, failed or was cancelled; returns None
        if it is still unfinished at the timeout, or if no task has this id.
        """
        if not isinstance(task_id, str):
            check_task_id(task_id)  # raises, saying what a task id is
        await self._ready()
        [result] = await self._wait_for([task_id], timeout, True, lambda _: None)
        return result

    def deserialize_result(self, result: Result[Any]) -> Any:
        """`result.value`, for the original sitq's code: see `Result.value_of`."""
        return Result.value_of(result)

    async def gather(
        self,
        task_ids: Sequence[str],
        timeout: float | None = None,
        *,
        missing_ok: bool = False,
        progress: bool | None = None,
    ) -> list[Result[Any] | None]:
        """Wait for many tasks; results come back in the order of `task_ids`.

        A task unfinished at the timeout gives None in its place. An unknown id raises
        TaskNotFoundError unless `missing_ok`. `progress=True` shows a tqdm bar (a widget in
        JupyterLab, text in a terminal); the default shows it only on an interactive terminal.
        """
        await self._ready()
        ids = list(task_ids)
        from sitq.views.progress import ProgressBar

        bar = ProgressBar(len(ids), progress)
        results = await self._wait_for(ids, timeout, missing_ok, bar.update)
        bar.close()
        return results

    async def _wait_for(
        self,
        ids: list[str],
        timeout: float | None,
        missing_ok: bool,
        on_done: Callable[[int], None],
    ) -> list[Result[Any] | None]:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        done: dict[str, Result[Any]] = {}
        pending = [i for i in dict.fromkeys(ids) if isinstance(i, str)]
        missing = set(dict.fromkeys(ids)) - set(pending)
        poll = FIRST_POLL
        # No ticket for the first look: most results are read once their task has finished.
        # A task not finished yet is looked at again at once, after a ticket is taken: a
        # settle after that look rings the ticket the wait then holds, and is not missed.
        ticket: asyncio.Event | None = None
        while pending:
            found = await self.backend.get_tasks(pending)
            missing |= {i for i in pending if i not in found}
            finished = {i: info for i, info in found.items() if info.status in TERMINAL}
            done.update({i: self._result(info) for i, info in finished.items()})
            on_done(len(finished))
            pending = [i for i in pending if i in found and i not in finished]
            remaining = None if deadline is None else deadline - loop.time()
            if not pending or (remaining is not None and remaining <= 0):
                break
            if ticket is not None:
                pause = poll if remaining is None else min(poll, remaining)
                # in this process the settle signal rings; other processes show as a change
                await first_of([ticket.wait(), self.backend.wait_for_change(pause)], pause)
                poll = min(poll * 2, self.backend.poll_interval)
            ticket = self.backend.settle_signal.ticket()
        if missing and not missing_ok:
            raise TaskNotFoundError(f"no task with id(s) {sorted(map(str, missing))}")
        return [done.get(i) if isinstance(i, str) else None for i in ids]

    def _result(self, info: TaskInfo) -> Result[Any]:
        # `Result.decoded`, written out: on get_result's path the decode and the record
        # are made from here, one module hop fewer (tests/test_engine_path.py counts them).
        value = None
        if info.status is TaskStatus.SUCCEEDED and info.result is not None:
            value = self.serializer.decode_value(info.result, task_id=info.task_id)
        return Result.of(info, value)


class OptionsView:
    """`queue.with_options(...)`: the same enqueue methods, with options attached."""

    def __init__(self, queue: TaskQueue, options: TaskOptions) -> None:
        self._queue = queue
        self.options = options

    @overload
    async def enqueue(
        self, func: Callable[P, Awaitable[R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskId[R]: ...
    @overload
    async def enqueue(
        self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> TaskId[R]: ...
    async def enqueue(self, func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> TaskId[Any]:
        [task_id] = await self._queue._enqueue_calls([(func, args, kwargs)], self.options)
        return TaskId(task_id)

    async def enqueue_many(self, calls: Iterable[TaskCall | tuple[Any, ...]]) -> list[str]:
        return await self._queue._enqueue_calls(as_calls(calls), self.options)

    async def chain(self, *calls: TaskCall | tuple[Any, ...]) -> list[str]:
        """`queue.chain(...)` with these options; with `after=`, its first step waits too."""
        return await self._queue._enqueue_calls(as_calls(calls), self.options, chained=True)

    async def schedule(
        self, func: Callable[..., Any], /, **when: Unpack[ScheduleKeywords]
    ) -> ScheduleInfo:
        """`TaskQueue.schedule`, each tick's task with these options (no delay/eta)."""
        return await self._queue._schedule_with(self.options, func, **when)


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
