"""Periodic tasks: declared once by a queue, enqueued tick by tick by the workers.

`TaskQueue.schedule(...)` stores a schedule (`declare`): the call, serialized once, and
when it ticks. Every worker, in every process and on every machine, looks at the
schedules as it goes (`ScheduleKeeper.enqueue_due`, called at each turn of its loop and by
`run_once`/`run_until_idle`) and, for each one whose next tick has come, asks
`sitq.policy.schedule.fire` which tick to enqueue, then stores that in one transaction
(`Backend.fire_schedule`). No worker is a leader: they may all fire the same tick at the
same moment, and the database keeps exactly one (a compare-and-set on the schedule's next
tick and a UNIQUE key per schedule and tick). A tick's task is an ordinary task: it is
claimed, retried and recorded like any other, due at the tick's time.

Time is the worker's clock, so on a `FakeClock` `worker.run_until_idle(until=...)` runs a
day of ticks in a moment; several workers sharing one FakeClock step it together
(`clock.advance(...)`, then each worker's `run_once()`), and each tick still runs once.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TypedDict, Unpack

from sitq.backends.base import Backend, NewTask
from sitq.backends.schedule_rows import NewSchedule, ScheduleFire, schedule_payload_id
from sitq.clock import Clock
from sitq.errors import InvalidScheduleError
from sitq.options import NO_OPTIONS, Plan, TaskOptions
from sitq.overview import ScheduleInfo, Schedules
from sitq.policy import schedule as policy
from sitq.policy import state
from sitq.task import new_task_ids
from sitq.wire.serialization import Serializer, TaskCall

logger: logging.Logger = logging.getLogger("sitq.schedules")


def declare(
    func: Callable[..., Any],
    args: object,
    kwargs: object,
    options: TaskOptions,
    serializer: Serializer,
    now: float,
    *,
    every: float | dt.timedelta | None,
    cron: str | None,
    tz: str | None,
    missed: str,
    name: str | None,
) -> NewSchedule:
    """The row `TaskQueue.schedule` stores, every input checked (`InvalidScheduleError`)."""
    timing = policy.timing(every, cron, tz)
    missed_policy = policy.missed_policy(missed)
    if options.delay is not None or options.eta is not None:
        raise InvalidScheduleError(
            "delay= and eta= have no meaning for a schedule: its ticks say when each task "
            "is due. Leave them out of with_options() (or @sitq.task) for schedule()."
        )
    if options.after is not None:
        raise InvalidScheduleError(
            "after= is not kept for a schedule's ticks: a tick's task waits for no parent. "
            "Leave it out for schedule() (a tick's task may enqueue its own children)."
        )
    if options.unique_key is not None:
        raise InvalidScheduleError(
            "unique_key= is not kept for a schedule's ticks: each tick is enqueued once "
            "already (a UNIQUE key per schedule and tick). Leave it out for schedule()."
        )
    if not isinstance(args, tuple | list) or not isinstance(kwargs, dict):
        raise InvalidScheduleError(
            f"args= must be a tuple and kwargs= a dict of the task's arguments, got "
            f"{type(args).__name__} and {type(kwargs).__name__}"
        )
    plan = Plan.of(func, options, now)
    chosen = plan.name if name is None else name
    if not isinstance(chosen, str) or not chosen.strip():
        raise InvalidScheduleError(
            f"name= must be a non-empty string (it identifies the schedule), got {name!r}"
        )
    call = TaskCall(func, tuple(args), dict(kwargs), plan.run_options)
    payload = serializer.encode_call(call, task_id=schedule_payload_id(chosen))
    _status, _due, _enqueued, priority, max_attempts, retry_policy, _key = plan.shared_columns
    return NewSchedule(
        name=chosen,
        task_name=plan.name,
        payload=payload,
        every=timing.every,
        cron=timing.cron,
        tz=timing.tz,
        missed=missed_policy,
        next_at=timing.first_tick(now),
        created_at=now,
        priority=priority,
        max_attempts=max_attempts,
        retry_policy=retry_policy,
    )


class ScheduleKeywords(TypedDict, total=False):
    """The keywords of `TaskQueue.schedule`, for the methods that pass them on
    (`with_options(...).schedule`, `SyncTaskQueue.schedule`)."""

    every: float | dt.timedelta | None
    cron: str | None
    tz: str | None
    args: Sequence[Any]
    kwargs: dict[str, Any] | None
    missed: str
    name: str | None


class QueueSchedules:
    """`TaskQueue`'s methods for periodic tasks: schedule, unschedule, schedules."""

    # Set by TaskQueue; declared here for the type checker.
    backend: Backend
    serializer: Serializer
    clock: Clock

    async def _ready(self) -> None:
        raise NotImplementedError

    async def schedule(
        self,
        func: Callable[..., Any],
        /,
        *,
        every: float | dt.timedelta | None = None,
        cron: str | None = None,
        tz: str | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        missed: str = "last",
        name: str | None = None,
    ) -> ScheduleInfo:
        """Run `func(*args, **kwargs)` periodically: `every` seconds (or a timedelta), or
        at the times a five-field `cron` expression names in time zone `tz` (default UTC).

        The schedule is stored in the database under `name` (default: the task's name) and
        the workers enqueue its ticks: each tick once, however many workers run, on
        however many machines; each tick's task is due at the tick's time. Declare it
        again (at every start of a program, say) and it is updated in place; its next tick
        is kept unless the timing changed. An interval's first tick is `every` after the
        first declaration; a cron schedule's is the first time it names after now.

        `missed`: what happens to ticks missed while no worker ran: "last" (default)
        enqueues the latest one once; "skip" enqueues nothing until the next tick (a tick
        found late by less than half a period still runs). See `sitq.policy.schedule`.
        Task options (retry, timeout, priority) come from `@sitq.task(...)` or
        `queue.with_options(...).schedule(...)`. Bad input raises InvalidScheduleError.
        """
        return await self._schedule_with(NO_OPTIONS, func, every=every, cron=cron, tz=tz,
                                        args=args, kwargs=kwargs, missed=missed,
                                        name=name)  # fmt: skip

    async def _schedule_with(
        self, options: TaskOptions, func: Callable[..., Any], /, **when: Unpack[ScheduleKeywords]
    ) -> ScheduleInfo:
        """`schedule`, each tick's task with these options (`with_options(...).schedule`)."""
        kwargs = when.get("kwargs")
        row = declare(func, when.get("args", ()), {} if kwargs is None else kwargs, options,
                      self.serializer, self.clock.now(), every=when.get("every"),
                      cron=when.get("cron"), tz=when.get("tz"),
                      missed=when.get("missed", "last"), name=when.get("name"))  # fmt: skip
        await self._ready()
        saved = await self.backend.save_schedule(row)
        look_again()
        return saved

    async def unschedule(self, name: str) -> bool:
        """Remove the schedule `name` (the tasks it enqueued stay); False if none."""
        await self._ready()
        removed = await self.backend.delete_schedule(name)
        look_again()
        return removed

    async def schedules(self) -> Schedules:
        """Every schedule with its next tick (a list that shows as a table in Jupyter)."""
        await self._ready()
        return Schedules(await self.backend.list_schedules())


def timing_of(schedule: ScheduleInfo) -> policy.Timing:
    return policy.Timing(every=schedule.every, cron=schedule.cron, tz=schedule.tz)


class ScheduleKeeper:
    """A worker's side of periodic tasks: enqueue the ticks that have come.

    It reads the schedules (a few rows) only when one may be due, and says when that is
    in a plain attribute, `look_at` (a time on the worker's clock), so the worker checks
    it without a call or a trip to storage: the earliest next tick seen at its last look,
    or `look_every` seconds after that look, for a schedule another process declared
    meanwhile. A schedule declared or removed in this process (any queue, any backend
    object) makes every keeper here look at its next turn (`look_again`): a worker driven
    by `run_once` sees a schedule declared a moment ago.
    """

    def __init__(
        self, backend: Backend, serializer: Serializer, clock: Clock, look_every: float
    ) -> None:
        self.backend: Backend = backend
        self.serializer: Serializer = serializer
        self.clock: Clock = clock
        self.look_every: float = look_every
        self.earliest: float | None = None  # the earliest next tick seen at the last look
        self.look_at: float = -math.inf  # when to look (again): at once, the first time
        _keepers.add(self)

    def sooner(self, next_due: float | None) -> float | None:
        """The earlier of `next_due` (a waiting task's) and the next tick known."""
        if self.earliest is None:
            return next_due
        return self.earliest if next_due is None else min(next_due, self.earliest)

    async def enqueue_due(self) -> int:
        """Look at the schedules and enqueue the ticks that have come; return how many this
        worker enqueued (a tick another worker enqueued first counts there, not here).
        The worker calls it when `look_at` has come."""
        now = self.clock.now()
        schedules = await self.backend.list_schedules()
        added = 0
        next_ticks = []
        for schedule in schedules:
            next_at = schedule.next_at
            if next_at <= now:
                fire = self._fire(schedule, now)
                added += await self.backend.fire_schedule(fire)
                next_at = fire.next_at
            next_ticks.append(next_at)
        self.earliest = min(next_ticks, default=None)
        self.look_at = min(
            now + self.look_every, math.inf if self.earliest is None else self.earliest
        )
        return added

    def _fire(self, schedule: ScheduleInfo, now: float) -> ScheduleFire:
        """What to store for a schedule whose tick has come (`policy.fire` decides)."""
        decision = policy.fire(timing_of(schedule), schedule.next_at, now,
                               policy.missed_policy(schedule.missed))  # fmt: skip
        fire = ScheduleFire(schedule.name, schedule.next_at, decision.next_at, now)
        if decision.skipped:
            logger.info("schedule %s: %d missed tick(s) skipped (missed=%r)",
                        schedule.name, decision.skipped, schedule.missed)  # fmt: skip
        if decision.tick is None:
            return fire
        [task_id] = new_task_ids(1)
        try:
            call = self.serializer.decode_call(
                schedule.payload, task_id=schedule_payload_id(schedule.name)
            )
            payload = self.serializer.encode_call(call, task_id=task_id)
        except Exception as exc:  # an unimportable function, another signing key...
            error = f"tick {decision.tick:.0f} not enqueued: {type(exc).__name__}: {exc}"
            logger.error("schedule %s: %s", schedule.name, error)
            return ScheduleFire(schedule.name, schedule.next_at, decision.next_at, now,
                                error=error)  # fmt: skip
        task = NewTask(
            task_id=task_id,
            name=schedule.task_name,
            payload=payload,
            status=state.on_enqueue(decision.tick, now).value,
            due_at=decision.tick,
            enqueued_at=now,
            priority=schedule.priority,
            max_attempts=schedule.max_attempts,
            retry_policy=schedule.retry_policy,
        )
        return ScheduleFire(schedule.name, schedule.next_at, decision.next_at, now,
                            tick_at=decision.tick, task=task)  # fmt: skip


#: The keepers of this process (`look_again`); a keeper leaves it with its worker.
_keepers: weakref.WeakSet[ScheduleKeeper] = weakref.WeakSet()


def look_again() -> None:
    """A schedule was declared or removed here: every keeper of this process looks at its
    next turn (one in another process within its `look_every`)."""
    for keeper in list(_keepers):
        keeper.look_at = -math.inf


def horizon(until: float | dt.datetime | None) -> float | None:
    """`run_until_idle(until=...)` as epoch seconds (an aware datetime, or a number)."""
    if until is None or (isinstance(until, int | float) and not isinstance(until, bool)):
        return None if until is None else float(until)
    if isinstance(until, dt.datetime) and until.tzinfo is not None:
        return until.timestamp()
    raise InvalidScheduleError(
        f"until= must be a clock time: epoch seconds (e.g. clock.now() + 86400) or an aware "
        f"datetime (with tzinfo), got {until!r}"
    )
