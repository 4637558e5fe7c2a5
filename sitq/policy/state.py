"""Every transition of a task, decided in one place by pure functions.

The worker, the queue and the backends never invent a next state: they ask this module and
store what it says. Each function takes plain values (a status, an error, a policy, the
time) and returns plain values, so every rule can be tested without a database or a clock.

The transition table (what happens, from which state, to which state, and who decides):

| from                          | event                                  | to                                          | decided by            |
|-------------------------------|----------------------------------------|---------------------------------------------|-----------------------|
| (new)                         | enqueue, due now / due later           | queued / scheduled                          | `on_enqueue`          |
| (new), with parents (`after=`) | enqueue: a parent unfinished / every parent succeeded / one failed, cancelled or gone | blocked / queued or scheduled / cancelled, naming that parent | `after_parents` |
| blocked                       | its last parent succeeded (in the parent's own transaction) | queued / scheduled (its due time kept) | `after_parents` |
| blocked                       | a parent failed for good or was cancelled (its own children in turn) | cancelled, its error naming the parent | `after_parents` |
| cancelled for a parent        | that parent is requeued                | blocked again (its children in turn)        | `after_parents` |
| queued, scheduled, retrying   | claim (due)                            | running; attempt +1, new fencing token      | `CLAIMABLE`           |
| running                       | the attempt succeeded                  | succeeded                                   | `after_attempt`       |
| running                       | it failed, the policy retries          | retrying, due after the policy's delay      | `after_attempt`       |
| running                       | it failed, the policy gives up         | failed (a dead letter)                      | `after_attempt`       |
| running                       | its result cannot be serialized        | failed                                      | `unsendable_result`   |
| running                       | it was cancelled while running         | cancelled                                   | `after_attempt`       |
| running, lease expired        | another worker takes it over           | lost attempt recorded, then: running again (retry now), retrying, failed, or cancelled if a cancel was asked | `after_lost_lease` |
| running, claimed ahead and never started, lease expired | another worker takes it over | running under the new lease as a plain claim: no attempt spent, nothing recorded | the claim (below) |
| running, claimed ahead and not started | it waited in hand too long, or its lease ran low while it waited | queued, in its place in line (due time kept); attempt refunded | `return_unstarted` |
| running, lease expired, budget spent | another worker's claim finds it  | lost attempt recorded; failed (WorkerLost), or cancelled if a cancel was asked: in the claim's own transaction, no attempt added | `LOST_WHEN_SPENT` |
| failed (WorkerLost)           | the lost attempt's body did complete: its outcome arrives late | that outcome (succeeded, retrying, failed), in place of the lost attempt's record; not one that waits again while another task holds its unique key (`HOLDS_UNIQUE_KEY`) | `LATE_OUTCOME_REPLACES` |
| running                       | its circuit breaker is open            | scheduled at the breaker's probe time; attempt refunded | `deferral` |
| running                       | the worker stops (grace over), or it was claimed ahead and never started | queued now; attempt refunded | `hand_back` |
| running                       | its task name's rate limit is reached  | scheduled when the window has room; attempt refunded | `rate_limited` |
| (new), with a unique key      | enqueue while a task holding that key is unfinished | no new task: the holder's id is returned | `HOLDS_UNIQUE_KEY` |
| blocked, queued, scheduled, retrying | cancel                          | cancelled                                   | `on_cancel`           |
| running                       | cancel                                 | running, cancel requested (the worker stops it at its next heartbeat, or settles it cancelled unrun if it was claimed ahead; survives a crash) | `on_cancel` |
| failed, cancelled             | requeue                                | queued, a fresh retry budget (a task with parents: as `after_parents` says) | `on_requeue` |
| failed, cancelled, with a unique key | requeue while another unfinished task holds the key | unchanged (UniqueKeyTakenError names the holder) | `on_requeue` |
| failed                        | purge                                  | deleted (history kept)                      | `PURGEABLE`           |
| succeeded, cancelled          | older than the retention time          | deleted with its history                    | `PRUNABLE`            |

Dead letters (failed) are never pruned: only `purge` removes them, on purpose.

The attempt count belongs to the start. A task claimed ahead waits in its worker's hand
and is stored as not started (`started_at` unset) until it starts; if that worker dies
first, the claim that takes the lease over spends no attempt for it and records no lost
attempt. That rule is the one the backends apply in SQL (their TAKE_OVER statements),
since it is decided inside the claim's own statement.

Dependencies: a task enqueued `after=[parent ids]` waits *blocked*, never claimed, until
every parent has succeeded. Whenever a parent reaches a new state (it succeeds, fails for
good, is cancelled, is requeued), the backend asks `after_parents` again for each child
that still waits on its parents (`waits_on_parents`), in the same transaction as the
parent's own change, and then for the children of every child that changed: a failure
reaches the whole tree below it, and no crash can leave a child blocked behind a finished
parent. A child cancelled for a parent keeps the error type `PARENT_FAILED`, which is how
the parent's requeue finds it again: it goes back to blocked, not left an orphan.
"""  # noqa: E501

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sitq.policy.retry import NO_RETRY, RetryPolicy, WorkerLost
from sitq.task import TERMINAL, WAITING, TaskStatus

#: States a worker may claim once they are due.
CLAIMABLE: frozenset[TaskStatus] = WAITING
#: A task enqueued with parents waits here, never claimed, until its last parent succeeded.
BLOCKED: TaskStatus = TaskStatus.BLOCKED
#: States `cancel` ends at once (the task will never run).
CANCELLABLE_NOW: frozenset[TaskStatus] = WAITING | {TaskStatus.BLOCKED}
#: The error type of a child cancelled because a parent failed, was cancelled or is gone.
PARENT_FAILED = "ParentFailed"
#: Dead letters: tasks that failed for good (listed by `dead_letters`, deleted by purge).
DEAD_LETTERS: frozenset[TaskStatus] = frozenset({TaskStatus.FAILED})
#: States `purge_dead_letters` deletes.
PURGEABLE: frozenset[TaskStatus] = frozenset({TaskStatus.FAILED})
#: Finished states that retention prunes (dead letters stay until purged).
PRUNABLE: frozenset[TaskStatus] = frozenset({TaskStatus.SUCCEEDED, TaskStatus.CANCELLED})
#: States `requeue` accepts.
REQUEUEABLE: frozenset[TaskStatus] = frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED})
#: States in which a task holds its unique key (`with_options(unique_key=...)`): every
#: unfinished one. While a task with a key is in one of them, enqueueing another with that
#: key returns the holder's id and adds nothing; a partial UNIQUE index over these states
#: makes the database refuse a second holder, whichever process races to insert it.
HOLDS_UNIQUE_KEY: frozenset[TaskStatus] = frozenset(TaskStatus) - TERMINAL
#: States in which a task keeps the rate-limit slot booked for it (`sitq.policy.rate_limits`):
#: a task cancelled while it waited for its slot leaves it free for the next.
KEEPS_BOOKED_SLOT: frozenset[TaskStatus] = frozenset(TaskStatus) - TERMINAL
#: A lost lease whose retry budget is spent (the lost attempt was the last one the budget
#: allowed): (status, error type) without a cancel request, and with one. Every policy gives
#: up there (`RetryPolicy.next_delay` returns None once `max_attempts` is reached), so the
#: claim that finds the expired lease decides it in its own transaction, with no attempt
#: added: no reader, and no crash of the claiming worker, ever leaves more attempts than
#: the budget. Backends build their SQL from these; `after_lost_lease` agrees with them.
LOST_WHEN_SPENT: tuple[TaskStatus, str] = (TaskStatus.FAILED, "WorkerLost")
LOST_WHEN_SPENT_CANCELLED: tuple[TaskStatus, str] = (TaskStatus.CANCELLED, "Cancelled")
#: The error message stored with LOST_WHEN_SPENT_CANCELLED.
LOST_CANCEL_MESSAGE = "cancelled; its worker was lost before it stopped"
#: A dead letter of this (status, error type) gives way to the outcome of the attempt it
#: blamed, if that attempt's body did complete after all (its worker stalled, it did not
#: die: a loop blocked longer than the lease, a paused process). The verdict was a guess
#: made without the outcome; nothing runs a dead letter again, so storing the real outcome
#: in its place is safe: it is settled by the worker that ran the attempt, with the
#: fencing token of that attempt (or the one after, the takeover's), never twice.
LATE_OUTCOME_REPLACES: tuple[TaskStatus, str] = LOST_WHEN_SPENT


@dataclass(frozen=True)
class Decision:
    """The next state of a task, and what to record about the attempt that led there.

    `outcome` is the Attempt.outcome to record (None: record nothing). `delay`/`due_at`
    say when a task that runs again is due. `refund` gives the claim's attempt back: a
    deferral or a hand-back did not really try the task.
    """

    status: TaskStatus
    outcome: str | None = None
    delay: float | None = None
    due_at: float | None = None
    refund: bool = False

    @property
    def retries(self) -> bool:
        return self.status is TaskStatus.RETRYING

    @property
    def runs_now(self) -> bool:
        """A lost lease whose policy retries at once: the taker runs the task itself."""
        return self.status is TaskStatus.RUNNING


SUCCEEDED = Decision(TaskStatus.SUCCEEDED, "succeeded")


def on_enqueue(due_at: float, now: float) -> TaskStatus:
    """A new task waits as queued when it is due now, scheduled when it is due later."""
    return TaskStatus.SCHEDULED if due_at > now else TaskStatus.QUEUED


def after_attempt(
    error: BaseException | None,
    tries: int,
    policy: RetryPolicy,
    now: float,
    rng: random.Random,
    previous_delay: float | None = None,
) -> Decision:
    """What happens after an attempt ended with `error` (None = success); `tries` counts the
    attempts since the last requeue, this one included (what the retry budget measures).

    A cancelled attempt is final. Otherwise the policy classifies the error and picks a
    delay; if it gives up (permanent error, budget spent), the task fails for good and
    becomes a dead letter. (A policy that raises while judging is the caller's to report:
    the worker logs it and judges again with NO_RETRY, so the task fails, never sticks.)
    """
    if error is None:
        return SUCCEEDED
    if isinstance(error, asyncio.CancelledError):
        return Decision(TaskStatus.CANCELLED, "cancelled")
    delay = policy.next_delay(tries, error, rng, previous_delay)
    if delay is None:
        return Decision(TaskStatus.FAILED, "failed")
    return Decision(TaskStatus.RETRYING, "retrying", delay, now + delay)


def unsendable_result() -> Decision:
    """The task returned a value the serializer cannot store: it fails, never retried."""
    return Decision(TaskStatus.FAILED, "failed")


def after_lost_lease(
    tries: int,
    policy: RetryPolicy,
    now: float,
    rng: random.Random,
    *,
    cancel_requested: bool,
    previous_delay: float | None = None,
) -> Decision:
    """A worker died (or stalled) holding the task; its lost attempt is already recorded,
    and `tries` is that lost attempt's count against the budget.

    A cancel asked for before the crash wins: the task ends cancelled. Otherwise the lost
    attempt counts against the budget like a failure with `WorkerLost`: retry at once
    (the taker runs it now), retry later, or give up. The taker's own claim is refunded
    unless it runs the task now.
    """
    if cancel_requested:
        return Decision(TaskStatus.CANCELLED, refund=True)
    error = WorkerLost("the worker stopped renewing its lease")
    judged = after_attempt(error, tries, policy, now, rng, previous_delay)
    if judged.retries and judged.delay == 0:
        return Decision(TaskStatus.RUNNING, delay=0.0)
    return Decision(judged.status, delay=judged.delay, due_at=judged.due_at, refund=True)


def deferral(breaker_retry_at: float | None, recovery_timeout: float, now: float) -> Decision:
    """The task's circuit breaker is open: wait for its probe time; no attempt is used."""
    due = breaker_retry_at if breaker_retry_at is not None else now + recovery_timeout
    return Decision(TaskStatus.SCHEDULED, due_at=max(due, now), refund=True)


def rate_limited(opens_at: float, now: float) -> Decision:
    """The task's rate limit has no room now (`sitq.policy.rate_limits`): wait until it has;
    no attempt is used."""
    return Decision(TaskStatus.SCHEDULED, due_at=max(opens_at, now), refund=True)


def hand_back(now: float) -> Decision:
    """The worker stops before the task finished: back to the queue, no attempt used."""
    return Decision(TaskStatus.QUEUED, due_at=now, refund=True)


def return_unstarted() -> Decision:
    """A task claimed ahead goes back unstarted (it waited in hand too long while another
    worker could run it, or its lease ran low): queued in its place in line, its due time
    kept, no attempt used."""
    return Decision(TaskStatus.QUEUED, refund=True)


class CancelAction(enum.Enum):
    """What `cancel` does to a task, by its current state."""

    CANCEL_NOW = "cancel now"  # it was waiting: it will never run
    REQUEST = "request"  # it is running: its worker stops it at the next heartbeat
    NOTHING = "nothing"  # it already finished (or does not exist)


def on_cancel(status: TaskStatus | None) -> CancelAction:
    if status in CANCELLABLE_NOW:
        return CancelAction.CANCEL_NOW
    if status is TaskStatus.RUNNING:
        return CancelAction.REQUEST
    return CancelAction.NOTHING


def on_requeue(
    status: TaskStatus | None,
    *,
    key_held_by: str | None = None,
    parents: ParentsVerdict | None = None,
) -> TaskStatus | None:
    """A failed or cancelled task goes back to the queue with a fresh budget; else None.

    Not while another unfinished task (`key_held_by`) holds its unique key: two holders of
    one key is what unique keys exist to prevent, so it stays as it is. A task cancelled for
    a parent (`waits_on_parents`) comes back as its parents say now (`parents`, from
    `after_parents`): blocked, or waiting; not at all while a parent is still failed,
    cancelled or gone (requeue that parent: its children follow it)."""
    if status not in REQUEUEABLE or key_held_by is not None:
        return None
    if parents is None:
        return TaskStatus.QUEUED
    return None if parents.finished else parents.status


@dataclass(frozen=True)
class ParentsVerdict:
    """Where a task with parents stands: its status, and for a cancelled one the error
    that names the parent to blame (error type `PARENT_FAILED`)."""

    status: TaskStatus
    error: str | None = None

    @property
    def error_type(self) -> str | None:
        return None if self.error is None else PARENT_FAILED

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


#: One parent as `after_parents` reads it: its id, status (None: no such task, e.g.
#: purged) and error.
Parent = tuple[str, TaskStatus | None, str | None]


def after_parents(parents: Sequence[Parent], due_at: float, now: float) -> ParentsVerdict:
    """A task whose parents are `parents` (in the order it named them), due at `due_at`.

    The first parent that failed, was cancelled or is gone cancels it, by name (a parent
    cancelled for its own parent passes that reason on, so the error leads to the root);
    otherwise it stays blocked while any parent is unfinished; once all have succeeded it
    waits like a new task (`on_enqueue`), its due time kept."""
    for parent_id, status, error in parents:
        if status is None:
            return ParentsVerdict(TaskStatus.CANCELLED, f"parent task {parent_id} is gone")
        if status in (TERMINAL - {TaskStatus.SUCCEEDED}):
            why = "failed" if status is TaskStatus.FAILED else "was cancelled"
            return ParentsVerdict(TaskStatus.CANCELLED, f"parent task {parent_id} {why}: {error}")
    if any(status is not TaskStatus.SUCCEEDED for _, status, _ in parents):
        return ParentsVerdict(BLOCKED)
    return ParentsVerdict(on_enqueue(due_at, now))


def waits_on_parents(status: TaskStatus | None, error_type: str | None) -> bool:
    """Does this child's fate still follow its parents? Yes while it is blocked, and when
    it was cancelled for a parent (that parent's requeue brings it back); no once it was
    released (it waits, runs or finished on its own) or cancelled by hand."""
    return status is BLOCKED or (status is TaskStatus.CANCELLED and error_type == PARENT_FAILED)


def budget_of(policy: RetryPolicy | None) -> tuple[int, str]:
    """The retry budget as data: (max attempts, a short description) stored in columns."""
    chosen = policy or NO_RETRY
    return chosen.max_attempts, describe(chosen)


def describe(policy: RetryPolicy) -> str:
    """A few words for tables and the CLI, e.g. "exponential, 5 attempts"."""
    if policy.max_attempts == 1:
        return "no retry"
    return f"{policy.backoff}, {policy.max_attempts} attempts"


def is_final(status: TaskStatus) -> bool:
    return status in TERMINAL
