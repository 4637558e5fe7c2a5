"""What a queue says about itself as a whole: how many tasks are in each state
(`QueueSummary`, from `queue.summary()`) and its periodic tasks (`ScheduleInfo`, a list of
them as `Schedules`, from `queue.schedules()`). One task's records are `sitq.task`'s;
statistics over many tasks' attempts, `sitq.summary`'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field

from sitq.task import TERMINAL, WAITING, TaskStatus
from sitq.views.html import schedules_html, table_html


@dataclass(frozen=True)
class ScheduleInfo:
    """A periodic task as stored (`queue.schedules()`, `sitq schedules`).

    `every` (seconds) or `cron` with its time zone `tz` say when it ticks; `missed` what
    happens to ticks missed while no worker ran ("last" or "skip", see
    `sitq.policy.schedule`). `next_at` is the next tick a worker will enqueue;
    `last_tick_at` and `last_task_id` the last one enqueued and its task. `last_error`
    says why a tick could not be enqueued (a call the worker could not prepare).
    """

    name: str
    task_name: str
    every: float | None
    cron: str | None
    tz: str
    missed: str
    next_at: float
    created_at: float
    last_tick_at: float | None = None
    last_task_id: str | None = None
    last_error: str | None = None
    priority: int = 0
    max_attempts: int | None = None
    retry_policy: str | None = None
    payload: bytes = field(default=b"", repr=False)

    @property
    def when(self) -> str:
        """ "every 3600s" or "cron 0 9 * * MON-FRI (Europe/Paris)"."""
        if self.every is not None:
            return f"every {self.every:g}s"
        return f"cron {self.cron} ({self.tz})"

    @property
    def next_tick(self) -> dt.datetime:
        """`next_at` as an aware datetime (UTC)."""
        return dt.datetime.fromtimestamp(self.next_at, dt.UTC)


class Schedules(list[ScheduleInfo]):
    """What `queue.schedules()` returns: a list of `ScheduleInfo` that Jupyter shows as a
    table (name, task, when, next tick, last tick)."""

    def _repr_html_(self) -> str:
        return schedules_html(self)


@dataclass(frozen=True)
class QueueSummary:
    """What `queue.summary()` returns: how many tasks are in each state, at one moment,
    and the periodic tasks declared on the queue (`schedules`, none by default)."""

    counts: Mapping[TaskStatus, int]
    schedules: tuple[ScheduleInfo, ...] = ()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def waiting(self) -> int:
        """Queued, scheduled or retrying: tasks a worker has still to run."""
        return sum(self.counts.get(s, 0) for s in WAITING)

    @property
    def finished(self) -> int:
        """Succeeded, failed or cancelled: tasks that will not change on their own."""
        return sum(self.counts.get(s, 0) for s in TERMINAL)

    @property
    def blocked(self) -> int:
        """Tasks waiting for their parent tasks (`with_options(after=...)`)."""
        return self.counts.get(TaskStatus.BLOCKED, 0)

    @property
    def dead_letters(self) -> int:
        return self.counts.get(TaskStatus.FAILED, 0)

    def __getitem__(self, status: TaskStatus | str) -> int:
        return self.counts.get(TaskStatus(status), 0)

    def __repr__(self) -> str:
        parts = ", ".join(f"{s.value}={self[s]}" for s in TaskStatus)
        periodic = f"; schedules={len(self.schedules)}" if self.schedules else ""
        return f"QueueSummary({parts}; total={self.total}{periodic})"

    def _repr_html_(self) -> str:
        rows: list[tuple[str, int]] = [(s.value, self[s]) for s in TaskStatus]
        counts = table_html(["status", "tasks"], [*rows, ("total", self.total)])
        return counts + (schedules_html(self.schedules) if self.schedules else "")
