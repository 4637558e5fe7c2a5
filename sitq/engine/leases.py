"""Keeping leases: the heartbeat that tells other workers "I am alive, leave my tasks".

A claim leases a task for `lease_seconds`. While the task runs, the keeper renews every
lease a third of a lease after the previous renewal *began* (not ended): even when a renewal
waits for the database's write lock, the next one starts in time. The backend reads the
clock only once it holds the lock, so the wait never eats into the lease.

The keeper waits on the injected clock (`clock.wait`), so with a `FakeClock` a test drives
heartbeats by moving virtual time: `clock.advance(10)` and the leases are renewed.

When a renewal is refused, the task was either taken over (our lease expired: we stalled)
or a cancel was asked for; `why_lease_ended` tells which, and the worker stops the task.

The heartbeat is a task on the worker's event loop: a task that blocks the loop (a
`time.sleep` in an `async def`) stops it for every neighbour. Rather than a thread of its
own (one more connection per worker, none for an in-memory queue, no FakeClock), sitq makes
such a stall cost no finished work: a takeover that only declares the tasks lost leaves
WorkerLost dead letters, and the outcome of each one that did complete replaces its verdict
(`state.LATE_OUTCOME_REPLACES`); a task the takeover runs again has run twice (at least once).

The keeper also knows, for each lease, the latest time it surely lasts until (`alive`):
an outcome that could not be stored yet is written again as long as that holds
(`sitq.engine.settling`), while the heartbeat keeps renewing the lease.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sitq.backends.base import Backend
from sitq.clock import Clock
from sitq.task import TaskInfo, TaskStatus

logger: logging.Logger = logging.getLogger("sitq.worker")

#: Why a running task's lease ended: the worker stops it, and settles it accordingly.
CANCELLED, LOST = "cancelled", "lost"


def why_lease_ended(info: TaskInfo | None, worker_id: str) -> str:
    """A refused renewal of a task still running under our name is a cancel request;
    anything else (another owner, another state, gone) means we lost it."""
    ours = info is not None and info.status is TaskStatus.RUNNING and info.worker_id == worker_id
    return CANCELLED if ours else LOST


class LeaseKeeper:
    """Holds this worker's leases (task id -> fencing token) and renews them."""

    def __init__(
        self,
        backend: Backend,
        clock: Clock,
        worker_id: str,
        lease_seconds: float,
        on_ended: Callable[[str, str], None],
    ) -> None:
        self.backend = backend
        self.clock = clock
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.on_ended = on_ended  # (task id, CANCELLED or LOST)
        self.tokens: dict[str, int] = {}
        #: task id -> a time (on `clock`) before which its lease surely holds: when the
        #: claim or the last renewal was *sent*, plus the lease (the database read its
        #: clock later). A stalled worker (SIGSTOP, a blocked loop) sees it has passed.
        self.valid_until: dict[str, float] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def hold(self, task_id: str, token: int, valid_until: float) -> None:
        """Hold a task's lease; `valid_until` counts only the first time (a claim's, not a
        later start's: the claim was sent earlier, so its bound is the safe one)."""
        self.tokens[task_id] = token
        self.valid_until.setdefault(task_id, valid_until)
        if self._heartbeat is None or self._heartbeat.done():
            self._stop = asyncio.Event()
            self._heartbeat = asyncio.create_task(self._beat(self._stop), name="sitq-heartbeat")

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
        if not self.tokens:
            self._stop.set()

    async def close(self) -> None:
        self._stop.set()
        if self._heartbeat is not None:
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None

    async def _beat(self, stop: asyncio.Event) -> None:
        """Renew every lease_seconds/3 (from the start of the last renewal) while we hold any.
        A failed renewal is logged and tried again: the heartbeat must not stop silently.
        `stop` is this heartbeat's own: a later one gets a fresh event."""
        began = self.clock.now()
        while self.tokens and not stop.is_set():
            if await self.clock.wait(began + self.lease_seconds / 3, stop):
                return
            began = self.clock.now()
            try:
                await self.renew()
            except Exception:
                logger.exception("worker %s: lease renewal failed; retrying", self.worker_id)

    async def renew(self) -> None:
        """Renew all held leases now; report the ones that ended."""
        held = list(self.tokens.items())
        if not held:
            return
        sent = self.clock.now()
        ended = await self.backend.renew_leases(held, self.clock.now, self.lease_seconds)
        for task_id, _ in held:
            if task_id in self.valid_until and task_id not in ended:
                self.valid_until[task_id] = sent + self.lease_seconds
        if not ended:
            return
        infos = await self.backend.get_tasks(list(ended))
        for task_id in ended:
            if task_id in self.tokens:
                self.on_ended(task_id, why_lease_ended(infos.get(task_id), self.worker_id))
