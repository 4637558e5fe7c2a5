"""The one place where a task's next state is decided.

`decide` is a pure function: given what happened in an attempt, the retry policy and the
time, it returns what should happen next. The worker calls it and the backend stores what
it says, so every retry rule can be tested without a database or a clock.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from sitq.retry import RetryPolicy
from sitq.task import TaskStatus


@dataclass(frozen=True)
class Decision:
    """The next state of a task after an attempt, and when it is due if it runs again."""

    status: TaskStatus
    outcome: str  # the Attempt.outcome to record
    delay: float | None = None
    due_at: float | None = None

    @property
    def retries(self) -> bool:
        return self.status is TaskStatus.RETRYING


SUCCEEDED = Decision(TaskStatus.SUCCEEDED, "succeeded")


def decide(
    error: BaseException | None,
    try_number: int,
    policy: RetryPolicy,
    now: float,
    rng: random.Random,
    previous_delay: float | None = None,
) -> Decision:
    """What happens after attempt `try_number` (1-based) ended with `error` (None = success).

    A cancelled attempt is final. Otherwise the policy classifies the error and picks a
    delay; if it gives up (permanent error, budget spent), the task fails for good and
    becomes a dead letter.
    """
    if error is None:
        return SUCCEEDED
    if isinstance(error, asyncio.CancelledError):
        return Decision(TaskStatus.CANCELLED, "cancelled")
    delay = policy.next_delay(try_number, error, rng, previous_delay)
    if delay is None:
        return Decision(TaskStatus.FAILED, "failed")
    return Decision(TaskStatus.RETRYING, "retrying", delay, now + delay)
