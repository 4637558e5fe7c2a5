"""Keeping leases: the heartbeat that tells other workers "I am alive, leave my tasks".

A claim leases a task for `lease_seconds`. From a worker's first turn to its stop, its
heartbeat (`Worker._beat`, in `sitq.engine.worker`) asks the keeper here to renew every lease
a third of a lease after the previous beat *began* (not ended): even when a renewal waits for the
database's write lock, the next one starts in time. The backend reads the clock only once it
holds the lock, so the wait never eats into the lease.

Which leases? The keeper keeps no list of its own: it reads the tasks the worker holds
where the pipeline tracks them (`Slots.leases`, in `sitq.engine.pipeline`: a claim that
lands adds its tasks, the worker's `Slots.forget` removes one), so nothing tells it of each
task one by one. What it adds is what renewals learned: when each lease was last renewed.

The heartbeat waits on the injected clock (`clock.wait`), so with a `FakeClock` a test drives
heartbeats by moving virtual time: `clock.advance(10)` and the leases are renewed.

When a renewal is refused, the task was either taken over (our lease expired: we stalled)
or a cancel was asked for; `why_lease_ended` tells which, and the worker stops the task.
The heartbeat loop itself is the worker's: it renews through `LeaseKeeper.renew` and acts
on what comes back, with no callback between the two.

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

from collections.abc import Mapping

from sitq.backends.base import Backend
from sitq.clock import Clock
from sitq.task import TaskInfo, TaskStatus

#: Why a running task's lease ended: the worker stops it, and settles it accordingly.
CANCELLED, LOST = "cancelled", "lost"
#: A lease the worker holds: the task's fencing token, and when the lease began on the
#: worker's clock (when the claim that got it was sent; in `run_once`, when the backend
#: claimed it). The pipeline keeps one for each task held (`Slots.leases`).
Lease = tuple[int, float]


def why_lease_ended(info: TaskInfo | None, worker_id: str) -> str:
    """A refused renewal of a task still running under our name is a cancel request;
    anything else (another owner, another state, gone) means we lost it."""
    ours = info is not None and info.status is TaskStatus.RUNNING and info.worker_id == worker_id
    return CANCELLED if ours else LOST


class LeaseKeeper:
    """Renews, in one trip, the leases of the tasks in `held` (the pipeline's
    `Slots.leases`: task id -> (fencing token, when its lease began on `clock`)), and knows
    how long each surely lasts. The heartbeat that calls `renew` every lease_seconds/3, and
    stops the tasks whose lease ended, is the worker's (`Worker._beat`)."""

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        worker_id: str,
        lease_seconds: float,
        held: Mapping[str, Lease],
    ) -> None:
        self.backend: Backend = backend
        self.clock: Clock = clock
        self.worker_id: str = worker_id
        self.lease_seconds: float = lease_seconds
        self.held: Mapping[str, Lease] = held  # read only: the pipeline's
        #: task id -> (token, when its last renewal was *sent*): the database read its clock
        #: later, so the lease surely lasts `lease_seconds` from then. Only tasks held at
        #: the last renewal are kept here, so it never grows past what the worker holds.
        self._renewed: dict[str, tuple[int, float]] = {}

    def _surely_until(self, task_id: str) -> float | None:
        """A time (on `clock`) before which the task's lease surely holds: when the claim
        or the last renewal was sent, plus the lease. A stalled worker (SIGSTOP, a blocked
        loop) sees it has passed. None if the task is not held."""
        lease = self.held.get(task_id)
        if lease is None:
            return None
        token, began = lease
        renewed = self._renewed.get(task_id)
        if renewed is not None and renewed[0] == token:  # the same lease, not an older one
            began = max(began, renewed[1])
        return began + self.lease_seconds

    def safe_to_start(self, task_id: str) -> bool:
        """True while more than a third of the task's lease is surely left: a live
        heartbeat renews when two thirds are left, so less means this worker stalled and
        another may have taken the task over. A check of the clock, no trip."""
        until = self._surely_until(task_id)
        return until is None or self.clock.now() < until - self.lease_seconds / 3

    def alive(self, task_id: str) -> bool:
        """Whether this worker still holds the task's lease, as far as it knows: an outcome
        that failed to save is tried again only while this holds."""
        until = self._surely_until(task_id)
        return until is not None and self.clock.now() < until

    async def renew(self) -> dict[str, str]:
        """Renew all held leases now; return the ones that ended: task id -> why
        (CANCELLED or LOST)."""
        held = [(task_id, token) for task_id, (token, _) in self.held.items()]
        if not held:
            return {}
        sent = self.clock.now()
        ended = await self.backend.renew_leases(held, self.clock.now, self.lease_seconds)
        renewed = {task_id: (token, sent) for task_id, token in held if task_id not in ended}
        # A lease that ended keeps what was known of it before; the rest is let go.
        kept = {task_id: self._renewed[task_id] for task_id in ended if task_id in self._renewed}
        self._renewed = kept | renewed
        if not ended:
            return {}
        infos = await self.backend.get_tasks(list(ended))
        return {task_id: why_lease_ended(infos.get(task_id), self.worker_id)
                for task_id in ended if task_id in self.held}  # fmt: skip
