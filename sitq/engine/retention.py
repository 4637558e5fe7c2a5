"""Retention: finished tasks are kept for a while, then deleted a few at a time.

A queue that never forgets grows without end: every succeeded task keeps its payload, its
result and its attempt records. Workers clean up as they go: now and then (at most once a
minute per worker, when the worker has nothing to do) one of them deletes a small batch of
tasks that finished longer ago than the retention time. Small batches keep each sweep short,
so the write lock is never held for long; a big backlog of old tasks is worked off over
several sweeps. Dead letters are never pruned: they wait for a person to look at them
(`sitq dead`, `sitq requeue`, `sitq purge`). `sitq prune DB --older-than 1h` prunes by hand.
"""

from __future__ import annotations

import logging

from sitq.backends.base import Backend
from sitq.clock import Clock

logger: logging.Logger = logging.getLogger("sitq.worker")

DEFAULT_RETENTION = 7 * 24 * 3600.0  # finished tasks are kept a week, then pruned
PRUNE_EVERY = 60.0  # seconds between two retention sweeps of one worker
PRUNE_BATCH = 500  # tasks deleted per sweep: small, so a sweep never holds the lock long


class Pruner:
    """One worker's share of the cleaning: a sweep at most every PRUNE_EVERY seconds."""

    def __init__(self, backend: Backend, clock: Clock, worker_id: str) -> None:
        self.backend = backend
        self.clock = clock
        self.worker_id = worker_id
        self._next_sweep = 0.0

    async def now_and_then(self, retention: float | None) -> None:
        """If a sweep is due, delete a batch of tasks finished more than `retention`
        seconds ago (None: keep them forever). The worker passes its current setting."""
        now = self.clock.now()
        if retention is None or now < self._next_sweep:
            return
        self._next_sweep = now + PRUNE_EVERY
        # The backend measures the age on its own clock when ours is real time (the
        # server's on PostgreSQL; on SQLite less a step of the machine's clock): a worker
        # whose clock is ahead must not prune results seconds old.
        pruned = await self.backend.prune(retention, self.clock.now, PRUNE_BATCH)
        if pruned:
            logger.info("worker %s pruned %d finished tasks", self.worker_id, pruned)
