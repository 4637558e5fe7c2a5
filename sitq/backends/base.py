"""The Backend protocol: everything sitq asks of storage, as whole operations.

The queue and the worker never write SQL. They ask a backend to *add tasks*, *claim due
tasks under a lease*, *settle outcomes* and *read* rows and history. Each of these is one
atomic operation, so a backend is free to do it in as few round trips as its database
allows, and a new backend (PostgreSQL...) only has to implement this page.

The records handed across (`NewTask`, `ClaimedTask`, `Settlement`) are a task's, and live
with the others in `sitq.task`; `Signal`, the bell a backend rings when it stored
something, lives beside the clock's waits in `sitq.clock`. Both are importable from here.

Decisions (retry or not, when, dead or not) are made in `sitq.policy.state`; a backend only
stores what a `Settlement` says, and refuses it, in the same statement, if the lease's
fencing token no longer matches (another worker took the task over). Each operation is
atomic and cancellation-safe: cancelling the awaiting coroutine (a timeout, `stop()`,
Ctrl-C) never leaves a transaction open or a lock held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from sitq.clock import Signal as Signal
from sitq.overview import ScheduleInfo
from sitq.task import Attempt, TaskInfo, TaskStatus
from sitq.task import ClaimedTask as ClaimedTask
from sitq.task import LostAttempt as LostAttempt
from sitq.task import NewTask as NewTask
from sitq.task import Settlement as Settlement

if TYPE_CHECKING:
    from sitq.backends.schedule_rows import NewSchedule, ScheduleFire

#: A time source for a backend operation: a timestamp, or a function read once the
#: operation holds the database's write lock (so a wait for the lock never shortens a lease).
#: Given a `SystemClock`'s `now`, a backend may measure leases and retention on a better
#: clock than the caller's (`sitq.clock.wall_clock_of`): PostgreSQL's server clock, shared
#: by every machine; on SQLite the machine's clock less any step it just took.
Now = float | Callable[[], float]


def read_now(now: Now) -> float:
    """The timestamp `now` stands for (call it when it is a function)."""
    return now() if callable(now) else float(now)


@dataclass(frozen=True)
class ClaimRequest:
    """The arguments of a claim (see `Backend.claim`), to send along with a settle."""

    worker_id: str
    limit: int
    now: Now
    lease_seconds: float
    held: Collection[str] = ()
    default_budget: tuple[int, str] | None = None
    ahead: int = 0
    started: Sequence[tuple[str, int, float]] = ()

    async def sent_to(self, backend: Backend) -> list[ClaimedTask]:
        """This claim, made alone: `backend.claim` with these arguments."""
        return await backend.claim(self.worker_id, self.limit, self.now, self.lease_seconds,
                                   held=self.held, default_budget=self.default_budget,
                                   ahead=self.ahead, started=self.started)  # fmt: skip


def set_failed(future: asyncio.Future[Any], error: BaseException) -> None:
    """Fail `future` with `error`, marked as read already. Its caller still gets the error
    when it awaits; but if the caller is cancelled in the moment between, nobody ever reads
    it, and asyncio would log "exception was never retrieved" for a write it did not lose."""
    future.set_exception(error)
    future.exception()


async def first_of(waits: Sequence[Awaitable[Any]], timeout: float | None) -> None:
    """Wait until the first of these awaitables finishes (or `timeout`); cancel the rest."""
    futures = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for future in futures:
            future.cancel()
        await asyncio.gather(*futures, return_exceptions=True)


class Connectable:
    """`async with backend:` connects it and closes it again, as the original sitq's
    backends did. Optional: a queue or worker given a backend connects it by itself."""

    async def connect(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


@runtime_checkable
class Backend(Protocol):
    """Storage for tasks and their attempt history.

    `work_signal` rings when tasks become due through this object (enqueue, requeue,
    release); `settle_signal` rings when a task reaches a new state. Other processes cannot
    hear them: `wait_for_change` tells a waiter when another connection committed (SQLite:
    the WAL-index header, or `PRAGMA data_version`; PostgreSQL: LISTEN/NOTIFY), and
    `poll_interval` is the longest a waiter sleeps without looking.
    """

    work_signal: Signal
    settle_signal: Signal
    poll_interval: float

    async def connect(self) -> None:
        """Open (and create) the storage. Safe to call again: each call needs one close."""
        ...

    async def close(self) -> None: ...

    @property
    def is_connected(self) -> bool: ...

    async def add_tasks(self, tasks: Sequence[NewTask]) -> None:
        """Insert all tasks atomically: all or nothing (one task: one statement)."""
        ...

    async def add_unique_tasks(self, tasks: Sequence[NewTask]) -> list[str]:
        """Insert tasks, some with a `unique_key`, in one transaction; return, for each, the
        id of the task that holds its key: its own when it was inserted, else that of the
        unfinished task (`state.HOLDS_UNIQUE_KEY`) that holds the key already (inserted
        earlier, by anyone, or earlier in this batch), in which case it is not inserted.
        The database enforces it (a partial UNIQUE index), so racing enqueuers in several
        processes get one task and the same id."""
        ...

    async def take_rate_slot(
        self, name: str, limit: int, period: float, now: Now, task_id: str
    ) -> float | None:
        """Give task `task_id` of name `name` a slot to start in under "`limit` starts per
        `period` seconds" (`sitq.policy.rate_limits`): None, it starts now (the slot is
        recorded); else the seconds until the slot booked for it. Asked again when it comes
        back, it starts on that slot. Atomic across every worker on the database."""
        ...

    async def claim(
        self,
        worker_id: str,
        limit: int,
        now: Now,
        lease_seconds: float,
        *,
        held: Collection[str] = (),
        default_budget: tuple[int, str] | None = None,
        ahead: int = 0,
        started: Sequence[tuple[str, int, float]] = (),
    ) -> list[ClaimedTask]:
        """Atomically lease up to `limit` tasks: first those whose lease expired (not in
        `held`, this worker's own), recording each lost attempt in the history (none for a
        task its worker never started), then due tasks in priority order.
        `default_budget` fills in a task's unset retry budget.

        Claiming ahead: the rows past the first `limit - ahead` are stored as not started
        (`ClaimedTask.ahead`); `started` (task id, token, when) records that such tasks
        have started since, so that from then on a lost lease costs them an attempt."""
        ...

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        """Store outcomes in one transaction; each is refused (False) if its fencing token
        is stale. The check is part of the UPDATE itself."""
        ...

    async def settle_and_claim(
        self, settlements: Sequence[Settlement], claim: ClaimRequest
    ) -> tuple[list[bool], list[ClaimedTask]]:
        """`settle`, then `claim`, in one round trip where the database allows it: a busy
        worker hands back what finished and takes what is next in one go."""
        ...

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], now: Now, lease_seconds: float
    ) -> set[str]:
        """Extend leases (heartbeat); return ids whose lease was lost or cancel requested."""
        ...

    async def next_due_at(self) -> float | None:
        """The earliest due time of a waiting task, or None when nothing waits."""
        ...

    async def wait_for_change(self, timeout: float | None) -> None:
        """Return when another connection may have changed the queue, or at `timeout`."""
        ...

    async def get_tasks(self, task_ids: Collection[str]) -> dict[str, TaskInfo]: ...

    async def list_tasks(
        self, statuses: Collection[TaskStatus] | None = None, limit: int | None = None
    ) -> list[TaskInfo]: ...

    async def counts(self) -> dict[TaskStatus, int]: ...

    async def attempts(self, task_id: str | None = None) -> list[Attempt]:
        """Attempt records in the order they finished."""
        ...

    async def cancel(self, task_id: str, now: float) -> TaskStatus | None:
        """Apply `state.on_cancel` atomically; return the status the task had."""
        ...

    async def requeue(self, task_id: str, now: float) -> TaskStatus | None:
        """Apply `state.on_requeue` atomically (a fresh budget); return the old status."""
        ...

    async def purge(self, statuses: Collection[TaskStatus]) -> int:
        """Delete tasks in these states (their history stays); return how many."""
        ...

    async def prune(self, older_than: float, now: Now, limit: int) -> int:
        """Delete up to `limit` tasks in `state.PRUNABLE` states that finished more than
        `older_than` seconds before `now`, with their attempt records; return how many."""
        ...

    async def set_progress(
        self, task_id: str, token: int, progress: float, message: str
    ) -> None: ...

    # -- for a live view (sitq.views.live) --------------------------------------------------------

    async def newest_attempts(self, limit: int) -> list[Attempt]:
        """The newest `limit` attempt records, newest first. Read backwards along the
        primary key, with no sort, so its cost depends on `limit`, not on how many records
        are kept: a live view asks for it every second."""
        ...

    # -- periodic tasks (sitq.engine.schedules) ---------------------------------------------

    async def save_schedule(self, schedule: NewSchedule) -> ScheduleInfo:
        """Insert or replace the schedule of this name. Its next tick is kept when the
        timing (every, cron, tz) is unchanged, else set to `schedule.next_at`."""
        ...

    async def delete_schedule(self, name: str) -> bool:
        """Remove a schedule (tasks it enqueued stay); False if there was none."""
        ...

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name (an older database without the table: none)."""
        ...

    async def fire_schedule(self, fire: ScheduleFire) -> bool:
        """Atomically: advance the schedule's next tick from `fire.expected_next_at` to
        `fire.next_at` (nothing if another worker already did), record the tick under a
        UNIQUE (schedule, tick) key, and add its task. True if the task was added: each
        tick is enqueued once, however many workers fire it at the same moment."""
        ...
