"""The Backend protocol: everything sitq asks of storage, as whole operations.

The queue and the worker never write SQL. They ask a backend to *add tasks*, *claim due
tasks under a lease*, *settle outcomes* and *read* rows and history. Each of these is one
atomic operation, so a backend is free to do it in as few round trips as its database
allows, and a new backend (PostgreSQL...) only has to implement this page.

Decisions (retry or not, when, dead or not) are made by the worker in `sitq.decision`;
a backend only stores what a `Settlement` says, and refuses it if the lease's fencing token
no longer matches (another worker took the task over).
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sitq.task import Attempt, TaskInfo, TaskStatus


@dataclass(frozen=True)
class NewTask:
    """A row to insert: the queue has already serialized the call."""

    task_id: str
    name: str
    payload: bytes
    status: TaskStatus  # QUEUED or SCHEDULED
    due_at: float
    enqueued_at: float
    priority: int = 0


@dataclass(frozen=True)
class ClaimedTask:
    """A task handed to one worker under a lease.

    `attempt` counts every attempt the task ever had (history numbering); `try_number` counts
    since the last `requeue`, which is what a retry budget is measured against. `token` is
    the fencing token: only a settlement carrying it is accepted. `lost_attempt` is set when
    the task was taken over from a worker whose lease expired (that attempt was lost).
    `last_delay` is the backoff chosen after the previous failed attempt, if any
    (decorrelated jitter grows from it).
    """

    task_id: str
    name: str
    payload: bytes
    attempt: int
    try_number: int
    token: int
    scheduled_for: float
    enqueued_at: float
    claimed_at: float
    lost_attempt: LostAttempt | None = None
    last_delay: float | None = None


@dataclass(frozen=True)
class LostAttempt:
    """The attempt of a worker that died (or stalled) holding a task's lease."""

    worker_id: str
    started_at: float
    scheduled_for: float


@dataclass(frozen=True)
class Settlement:
    """What to store for a claimed task once the worker has decided.

    `status` is the task's next state. For RETRYING/QUEUED/SCHEDULED, `due_at` says when it
    runs again. `refund_attempt` gives the attempt back (a breaker deferral or a shutdown
    hand-back cost no attempt). `attempt` is the history record to append, if any.
    """

    task_id: str
    token: int
    status: TaskStatus
    now: float
    due_at: float | None = None
    result: bytes | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    attempt: Attempt | None = None
    refund_attempt: bool = False


class Signal:
    """An in-process "something changed" bell that never loses a ring.

    Take `signal.ticket()` *before* looking at the database, then `await signal.wait(ticket,
    timeout)`: a ring between the look and the wait is not missed, because each ring
    replaces the event that earlier tickets hold.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        return self._event

    def ring(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    @staticmethod
    async def wait(ticket: asyncio.Event, timeout: float | None) -> bool:
        """Wait for a ring after `ticket` was taken; False on timeout."""
        if timeout is not None and timeout <= 0:
            return ticket.is_set()
        try:
            await asyncio.wait_for(ticket.wait(), timeout)
        except TimeoutError:
            return False
        return True


@runtime_checkable
class Backend(Protocol):
    """Storage for tasks and their attempt history.

    `work_signal` rings when tasks become due through this object (enqueue, requeue,
    release); `settle_signal` rings when a task reaches a new state. Workers and waiters in
    other processes cannot hear them, so they also poll at `poll_interval` seconds.
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
        """Insert all tasks in one transaction: all or nothing."""
        ...

    async def claim(
        self, worker_id: str, limit: int, now: float, lease_seconds: float
    ) -> list[ClaimedTask]:
        """Atomically lease up to `limit` due tasks (and tasks whose lease expired)."""
        ...

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        """Store outcomes; each is refused (False) if its fencing token is stale."""
        ...

    async def append_attempt(self, attempt: Attempt) -> None:
        """Append one history record outside a settlement (a lost attempt retried at once)."""
        ...

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], now: float, lease_seconds: float
    ) -> set[str]:
        """Extend leases (heartbeat); return ids whose lease was lost or cancelled."""
        ...

    async def next_due_at(self) -> float | None:
        """The earliest due time of a waiting task, or None when nothing waits."""
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
        """Cancel a waiting task, or flag a running one; return the status it had."""
        ...

    async def requeue(self, task_id: str, now: float) -> TaskStatus | None:
        """Give a failed or cancelled task a fresh retry budget; return the old status."""
        ...

    async def purge(self, statuses: Collection[TaskStatus]) -> int:
        """Delete tasks in these states (their history stays); return how many."""
        ...

    async def set_progress(
        self, task_id: str, token: int, progress: float, message: str
    ) -> None: ...
