"""The rate-limit gate a claimed task passes just before it starts.

A task whose name has a rate limit (`@sitq.task(rate_limit="10/s")`, or
`Worker(rate_limits={"call_api": "10/s"})` for tasks that set none) asks the database for
a slot to start in (`Backend.take_rate_slot`): the slots are shared by every worker on
the database. If the window is full, the task is not run: it goes back to wait for the slot
booked for it (`state.rate_limited`), its attempt given back, as a task behind an open
circuit breaker does, and starts on it when it comes back. The gate comes before the
breaker (`TaskRunner.prepare`), so a refused start never spends one of the breaker's probes.

The gate only answers: what it decided goes back to the worker, which stores it as it
stores every other ending, then logs the note.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from sitq.backends.base import Backend, ClaimedTask
from sitq.clock import Clock
from sitq.options import TaskOptions
from sitq.policy import rate_limits, state
from sitq.policy.rate_limits import RateLimit

logger: logging.Logger = logging.getLogger("sitq.worker")


class TurnedAway(NamedTuple):
    """A task the gate sent back: its next state, when that was decided, and why."""

    decision: state.Decision
    now: float
    note: str


@dataclass
class RateGate:
    """Admits or turns away claimed tasks by their rate limits; shared by a worker's tasks."""

    backend: Backend
    clock: Clock
    limits: Mapping[str, RateLimit]  # the worker's, by task name

    def limit_of(self, name: str, options: TaskOptions) -> RateLimit | None:
        """The task's own limit (from `@task` or `with_options`), else the worker's."""
        if options.rate_limit is not None:
            return rate_limits.parse(options.rate_limit)
        return self.limits.get(name)

    async def turned_away(self, task: ClaimedTask, options: TaskOptions) -> TurnedAway | None:
        """None if the task may start now (its slot is counted). Else what sends it back,
        no attempt used: to wait for its booked slot, or, if the database could not be
        asked, to be claimed again at once."""
        limit = self.limit_of(task.name, options)
        if limit is None:
            return None
        try:
            wait = await self.backend.take_rate_slot(
                task.name, limit.count, limit.period, self.clock.now, task.task_id
            )
        except Exception as exc:  # a storage error is never the task's: hand it back
            logger.warning("task %s: its rate limit could not be checked (%s); handed back",
                           task.task_id, exc)  # fmt: skip
            now = self.clock.now()
            note = f"task {task.task_id} handed back to the queue: its rate limit was not checked"
            return TurnedAway(decision=state.hand_back(now), now=now, note=note)
        if wait is None:
            return None
        now = self.clock.now()
        note = (f"task {task.task_id} ({task.name}) waits {wait:.3g}s for its slot: "
                f"rate limit {limit} reached")  # fmt: skip
        return TurnedAway(decision=state.rate_limited(now + wait, now), now=now, note=note)
