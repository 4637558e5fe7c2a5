"""The rate-limit gate a claimed task passes just before it starts.

A task whose name has a rate limit (`@sitq.task(rate_limit="10/s")`, or
`Worker(rate_limits={"call_api": "10/s"})` for tasks that set none) asks the database for
a slot to start in (`Backend.take_rate_slot`): the slots are shared by every worker on
the database. If the window is full, the task is not run: it goes back to wait for the slot
booked for it (`state.rate_limited`), its attempt given back, as a task behind an open
circuit breaker does, and starts on it when it comes back. The gate comes before the
breaker, so a refused start never spends one of the breaker's probes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sitq.backends.base import Backend, ClaimedTask, Settlement
from sitq.clock import Clock
from sitq.engine.settling import Settler
from sitq.options import TaskOptions
from sitq.policy import rate_limits, state
from sitq.policy.rate_limits import RateLimit

logger: logging.Logger = logging.getLogger("sitq.worker")


@dataclass
class RateGate:
    """Admits or defers claimed tasks by their rate limits; shared by a worker's tasks."""

    backend: Backend
    settler: Settler
    clock: Clock
    limits: Mapping[str, RateLimit]  # the worker's, by task name

    def limit_of(self, name: str, options: TaskOptions) -> RateLimit | None:
        """The task's own limit (from `@task` or `with_options`), else the worker's."""
        if options.rate_limit is not None:
            return rate_limits.parse(options.rate_limit)
        return self.limits.get(name)

    async def admits(self, claimed: ClaimedTask, options: TaskOptions) -> bool:
        """True if the task may start now (its slot is counted). False if it was sent back
        to wait, no attempt used: for its booked slot, or, if the database could not be
        asked, to be claimed again at once."""
        limit = self.limit_of(claimed.name, options)
        if limit is None:
            return True
        try:
            wait = await self.backend.take_rate_slot(
                claimed.name, limit.count, limit.period, self.clock.now, claimed.task_id
            )
        except Exception as exc:  # a storage error is never the task's: hand it back
            logger.warning("task %s: its rate limit could not be checked (%s); handed back",
                           claimed.task_id, exc)  # fmt: skip
            now = self.clock.now()
            await self._store(claimed, state.hand_back(now), now)
            return False
        if wait is None:
            return True
        now = self.clock.now()
        decision = state.rate_limited(now + wait, now)
        await self._store(claimed, decision, now)
        logger.info("task %s (%s) waits %.3gs for its slot: rate limit %s reached",
                    claimed.task_id, claimed.name, wait, limit)  # fmt: skip
        return False

    async def _store(self, claimed: ClaimedTask, decision: state.Decision, now: float) -> None:
        await self.settler.settle(
            Settlement(
                claimed.task_id,
                claimed.token,
                decision.status,
                now,
                due_at=decision.due_at,
                refund_attempt=decision.refund,
            )
        )
