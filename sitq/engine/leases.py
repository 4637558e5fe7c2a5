"""Keeping leases: the heartbeat that tells other workers "I am alive, leave my tasks".

A claim leases a task for `lease_seconds`. While the task runs, the keeper renews every
lease a third of a lease after the previous renewal *began* (not ended): even when a renewal
waits for the database's write lock, the next one starts in time. The backend reads the
clock only once it holds the lock, so the wait never eats into the lease.

The heartbeat waits on the injected clock (`clock.wait`), so with a `FakeClock` a test drives
heartbeats by moving virtual time: `clock.advance(10)` and the leases are renewed.

When a renewal is refused, the task was either taken over (our lease expired: we stalled)
or a cancel was asked for; `why_lease_ended` tells which, and the worker stops the task.
The heartbeat loop itself is the worker's (`Worker._beat`): it renews through
`LeaseKeeper.renew` and acts on what comes back, with no callback between the two.

The heartbeat is a task on the worker's event loop: a task that blocks the loop (a
`time.sleep` in an `async def`) stops it for every neighbour. Rather than a thread of its
own (one more connection per worker, none for an in-memory queue, no FakeClock), sitq makes
such a stall cost no finished work: a takeover that only declares the tasks lost leaves
WorkerLost dead letters, and the outcome of each one that did complete replaces its verdict
(`state.LATE_OUTCOME_REPLACES`); a task the takeover runs again has run twice (at least once).

The keeper also knows, for each lease, the latest time it surely lasts until (`alive`):
an outcome that could not be stored yet is written again as long as that holds
(`sitq.engine.pipeline`), while the heartbeat keeps renewing the lease.
"""

from __future__ import annotations

from sitq.backends.base import Backend
from sitq.clock import Clock
from sitq.task import TaskInfo, TaskStatus

#: Why a running task's lease ended: the worker stops it, and settles it accordingly.
CANCELLED, LOST = "cancelled", "lost"


def why_lease_ended(info: TaskInfo | None, worker_id: str) -> str:
    """A refused renewal of a task still running under our name is a cancel request;
    anything else (another owner, another state, gone) means we lost it."""
    ours = info is not None and info.status is TaskStatus.RUNNING and info.worker_id == worker_id
    return CANCELLED if ours else LOST


class LeaseKeeper:
    """This worker's leases (task id -> fencing token), what it knows of how long each
    surely lasts, and the renewal of them all in one trip. The heartbeat that calls
    `renew` every lease_seconds/3, and stops the tasks whose lease ended, is the worker's
    (`Worker._beat`)."""

    def __init__(self, backend: Backend, clock: Clock, worker_id: str, lease_seconds: float):
        self.backend: Backend = backend
        self.clock: Clock = clock
        self.worker_id: str = worker_id
        self.lease_seconds: float = lease_seconds
        self.tokens: dict[str, int] = {}
        #: task id -> a time (on `clock`) before which its lease surely holds: when the
        #: claim or the last renewal was *sent*, plus the lease (the database read its
        #: clock later). A stalled worker (SIGSTOP, a blocked loop) sees it has passed.
        self.valid_until: dict[str, float] = {}

    def hold(self, task_id: str, token: int, valid_until: float) -> None:
        """Hold a task's lease; `valid_until` counts only the first time (a claim's, not a
        later start's: the claim was sent earlier, so its bound is the safe one)."""
        self.tokens[task_id] = token
        self.valid_until.setdefault(task_id, valid_until)

    def safe_to_start(self, task_id: str) -> bool:
        """True while more than a third of the task's lease is surely left: a live
        heartbeat renews when two thirds are left, so less means this worker stalled and
        another may have taken the task over. A check of the clock, no trip."""
        until = self.valid_until.get(task_id)
        return until is None or self.clock.now() < until - self.lease_seconds / 3

    def alive(self, task_id: str) -> bool:
        """Whether this worker still holds the task's lease, as far as it knows: an outcome
        that failed to save is tried again only while this holds."""
        until = self.valid_until.get(task_id)
        return task_id in self.tokens and (until is None or self.clock.now() < until)

    def release(self, task_id: str) -> None:
        self.tokens.pop(task_id, None)
        self.valid_until.pop(task_id, None)

    async def renew(self) -> dict[str, str]:
        """Renew all held leases now; return the ones that ended: task id -> why
        (CANCELLED or LOST)."""
        held = list(self.tokens.items())
        if not held:
            return {}
        sent = self.clock.now()
        ended = await self.backend.renew_leases(held, self.clock.now, self.lease_seconds)
        for task_id, _ in held:
            if task_id in self.valid_until and task_id not in ended:
                self.valid_until[task_id] = sent + self.lease_seconds
        if not ended:
            return {}
        infos = await self.backend.get_tasks(list(ended))
        return {task_id: why_lease_ended(infos.get(task_id), self.worker_id)
                for task_id in ended if task_id in self.tokens}  # fmt: skip
