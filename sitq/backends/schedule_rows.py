"""What a worker and a queue hand a backend about periodic tasks (`sitq.engine.schedules`):
the rows to store, as `NewTask` is for tasks (`sitq.backends.base`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sitq.backends.base import NewTask


class NewSchedule(NamedTuple):
    """A periodic task to store (`TaskQueue.schedule`): its call, serialized for the
    payload id `schedule_payload_id(name)`, when it ticks, and the columns each tick's task
    gets (priority, retry budget). `next_at` is its first tick; a schedule stored again
    with the same timing keeps the next tick it has (a program that declares its schedules
    at every start must not postpone them)."""

    name: str
    task_name: str
    payload: bytes
    every: float | None
    cron: str | None
    tz: str
    missed: str
    next_at: float
    created_at: float
    priority: int = 0
    max_attempts: int | None = None
    retry_policy: str | None = None


def schedule_payload_id(name: str) -> str:
    """The id a schedule's call is serialized (and signed) for: a signed payload is bound
    to its id, so a tick's task gets the call serialized again for its own id."""
    return f"sitq-schedule:{name}"


@dataclass(frozen=True)
class ScheduleFire:
    """What a worker stores for a schedule whose tick has come (`Backend.fire_schedule`).

    Stored only if the schedule's next tick is still `expected_next_at` (no other worker
    fired it meanwhile): then `next_at` becomes the next tick and, if `task` is given, the
    tick `tick_at` is recorded (unique per schedule and tick) and its task added, all in
    one transaction. `error` is kept as the schedule's last error (None clears it).
    """

    name: str
    expected_next_at: float
    next_at: float
    now: float
    tick_at: float | None = None
    task: NewTask | None = None
    error: str | None = None
