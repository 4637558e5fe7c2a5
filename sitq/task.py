"""The data a queue hands around: task states, results and attempt records.

Everything here is a plain dataclass or enum, so students can print it, compare it and
build tables and plots from it without touching the database.
"""

from __future__ import annotations

import datetime as dt
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from sitq.errors import InvalidTaskError, SitqWarning, TaskNotFoundError
from sitq.views.html import history_html, result_html

if TYPE_CHECKING:
    from sitq.wire.serialization import Serializer

#: The original sitq's statuses that sitq does not have, and what to write instead: a
#: comparison with one of them would be False forever, so it warns (see TaskStatus.__eq__).
FOREIGN_STATUSES = {
    "success": 'sitq says "succeeded" (TaskStatus.SUCCEEDED, or result.is_success())',
    "pending": "sitq has no pending state: use result.is_pending() (not finished yet)",
}


class TaskStatus(StrEnum):
    """Where a task is in its life. The value is what the database stores."""

    BLOCKED = "blocked"  # waiting for its parent tasks to succeed (`after=`): not claimable
    QUEUED = "queued"  # waiting, due now
    SCHEDULED = "scheduled"  # waiting for a future due time (delay/eta)
    RUNNING = "running"  # claimed by a worker, under a lease
    RETRYING = "retrying"  # failed an attempt, waiting for its next one
    SUCCEEDED = "succeeded"  # finished with a value
    FAILED = "failed"  # failed for good: a dead letter
    CANCELLED = "cancelled"  # withdrawn before it finished

    def __eq__(self, other: object) -> bool:
        """A status equals its text, as any str; `status == "success"` (the original
        sitq's word) also warns, since it is never true here and hides a silent bug."""
        _warn_if_foreign(other)
        return str.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        _warn_if_foreign(other)
        return str.__ne__(self, other)

    __hash__ = str.__hash__  # defining __eq__ would otherwise make members unhashable


def _warn_if_foreign(other: object) -> None:
    if type(other) is str and other in FOREIGN_STATUSES:
        warnings.warn(
            f"a TaskStatus is never {other!r}: {FOREIGN_STATUSES[other]} (see docs/migrating.md)",
            SitqWarning,
            stacklevel=3,
        )


#: States a task never leaves on its own (only `requeue` moves a failed task on).
TERMINAL: frozenset[TaskStatus] = frozenset(
    {TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)
#: States in which a task waits for a worker to claim it.
WAITING: frozenset[TaskStatus] = frozenset(
    {TaskStatus.QUEUED, TaskStatus.SCHEDULED, TaskStatus.RETRYING}
)


#: What a task returns, for the type checker: `TaskId[int]` names a task whose function
#: returns an int, and `get_result` of it gives a `Result[int]`.
R_co = TypeVar("R_co", covariant=True)


class TaskId(str, Generic[R_co]):
    """A task's id: a plain string (store it, print it, pass it between programs), that
    also remembers, for mypy and pyright only, what its task returns.

    `enqueue` gives one; `get_result(task_id)` then knows the type of `Result.value`. An id
    read back from a file or the command line is a plain `str` and works the same way, with
    `Result[Any]`.
    """

    __slots__ = ()


def check_task_id(task_id: object) -> str:
    """Task ids are the strings `enqueue` returned; anything else is a typed error."""
    if not isinstance(task_id, str):
        raise TaskNotFoundError(
            f"task ids are strings (as enqueue() returned them), got {type(task_id).__name__}"
            f" {task_id!r}; for many tasks use queue.gather(ids)"
        )
    return task_id


#: Byte tables for `bytes.translate`: byte 6 of a version-4 UUID starts with the bits 0100
#: (the version), byte 8 with 10 (the RFC 4122 variant); the other bits stay random.
VERSION_4_BYTE = bytes((byte & 0x0F) | 0x40 for byte in range(256))
RFC_VARIANT_BYTE = bytes((byte & 0x3F) | 0x80 for byte in range(256))


def new_task_ids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs as text, from one read of the system's randomness:
    enqueue_many makes one per task, and a read per id would cost twice as much. The
    version and variant bits are set for all ids at once, through the tables above."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(VERSION_4_BYTE)
    raw[8::16] = raw[8::16].translate(RFC_VARIANT_BYTE)
    h = raw.hex()
    return [
        f"{h[at : at + 8]}-{h[at + 8 : at + 12]}-{h[at + 12 : at + 16]}-"
        f"{h[at + 16 : at + 20]}-{h[at + 20 : at + 32]}"
        for at in range(0, 32 * count, 32)
    ]


def to_datetime(timestamp: float | None) -> dt.datetime | None:
    """Turn a stored epoch timestamp into an aware UTC datetime (None stays None)."""
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


@dataclass(frozen=True)
class Result(Generic[R_co]):
    """The outcome of one task, as `TaskQueue.get_result` returns it.

    `value` is the task's return value (deserialized; None unless it succeeded), typed
    `R_co | None` when the id came from `enqueue`; `error`, `error_type` and
    `traceback` describe the last failure. Times are aware UTC datetimes from the
    queue's clock, so a FakeClock gives reproducible results.
    """

    task_id: str
    status: TaskStatus
    value: R_co | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    attempts: int = 0
    enqueued_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    task_name: str = ""
    max_attempts: int | None = None

    @classmethod
    def of(cls, info: TaskInfo, value: Any = None) -> Result[Any]:
        """The Result of a finished task's row; `value` is its result, deserialized."""
        return Result(
            task_id=info.task_id,
            status=info.status,
            value=value,
            error=info.error,
            error_type=info.error_type,
            traceback=info.traceback,
            attempts=info.attempts,
            enqueued_at=to_datetime(info.enqueued_at),
            started_at=to_datetime(info.started_at),
            finished_at=to_datetime(info.finished_at),
            task_name=info.name,
            max_attempts=info.max_attempts,
        )

    @classmethod
    def decoded(cls, info: TaskInfo, serializer: Serializer) -> Result[Any]:
        """The Result `get_result` returns for a task's row: a success's value decoded."""
        value = None
        if info.status is TaskStatus.SUCCEEDED and info.result is not None:
            value = serializer.decode_value(info.result, task_id=info.task_id)
        return cls.of(info, value)

    @property
    def duration(self) -> float | None:
        """Seconds from the start of the last attempt to the finish, if both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def is_success(self) -> bool:
        return self.status is TaskStatus.SUCCEEDED

    def is_failed(self) -> bool:
        return self.status is TaskStatus.FAILED

    def is_pending(self) -> bool:
        """True while the task may still change: not succeeded, failed or cancelled."""
        return self.status not in TERMINAL

    @staticmethod
    def value_of(result: Result[Any]) -> Any:
        """`result.value` (`TaskQueue.deserialize_result`): the original sitq's results held
        bytes to decode, sitq's are decoded already. A task that did not succeed has None:
        check `result.is_success()` first (the status is "succeeded", never "success")."""
        if not isinstance(result, Result):
            raise InvalidTaskError(
                f"deserialize_result needs a Result, got {result!r} (get_result returns "
                "None when the task is unfinished at its timeout or the id is unknown)"
            )
        return result.value

    def _repr_html_(self) -> str:
        return result_html(self)


#: Every value `Attempt.outcome` can take.
OUTCOMES = ("succeeded", "retrying", "failed", "worker_lost", "cancelled")


@dataclass(frozen=True)
class Attempt:
    """One try at running a task: the unit of history, analysis and plots.

    Times are epoch seconds on the queue's clock. `outcome` is one of OUTCOMES:
    "succeeded"; "retrying" (failed, will run again after `next_delay` seconds);
    "failed" (failed for good); "worker_lost" (the worker died holding the lease);
    "cancelled". A time limit shows as `error_type == "TaskTimeout"`.
    """

    task_id: str
    task_name: str
    attempt: int
    worker_id: str
    scheduled_for: float
    started_at: float
    finished_at: float
    outcome: str
    error_type: str | None = None
    error_message: str | None = None
    next_delay: float | None = None

    @property
    def duration(self) -> float:
        return self.finished_at - self.started_at

    @property
    def lateness(self) -> float:
        """How long after its planned time the attempt started (queue wait for attempt 1)."""
        return self.started_at - self.scheduled_for


@dataclass
class TaskInfo:
    """A task's full row, as `TaskQueue.get_task` returns it (payload left serialized)."""

    task_id: str
    name: str
    status: TaskStatus
    attempts: int
    enqueued_at: float
    due_at: float
    priority: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    error: str | None = None
    error_type: str | None = None
    traceback: str | None = None
    progress: float | None = None
    progress_message: str | None = None
    max_attempts: int | None = None  # the retry budget (None: the worker's default, unclaimed)
    retry_policy: str | None = None  # a few words, e.g. "exponential, 5 attempts"
    tries: int | None = None  # attempts since the last requeue: what the budget counts
    result: bytes | None = field(default=None, repr=False)

    @property
    def attempt_text(self) -> str:
        """ "attempt 2 of 5" (or "attempt 2" while the budget is not known yet)."""
        tries = self.attempts if self.tries is None else self.tries
        if self.max_attempts is None:
            return f"attempt {tries}"
        return f"attempt {tries} of {self.max_attempts}"


class History(list[Attempt]):
    """What `queue.history()` returns: a plain list of `Attempt`s that Jupyter shows as a
    table. Everything a list does still works (len, slicing, loops, `== [...]`)."""

    def _repr_html_(self) -> str:
        return history_html(self)


# -- a task's rows on their way to and from storage -----------------------------------


class NewTask(NamedTuple):
    """A row to insert: the queue has already serialized the call and chosen its state.

    `max_attempts` and `retry_policy` are the retry budget as data (None: the worker's
    default policy applies; the claim fills them in), so a plain SQL query, `sitq status`
    and the HTML tables can say "attempt 2 of 5" without unpickling anything. A named
    tuple, not a dataclass: enqueue_many makes one per task, and a tuple is made fastest.
    """

    task_id: str
    name: str
    payload: bytes
    status: str  # QUEUED or SCHEDULED (state.on_enqueue) as plain text: sqlite3 binds a
    # str subclass such as the enum through its slower adapter lookup (+0.35 us a row)
    due_at: float
    enqueued_at: float
    priority: int = 0
    max_attempts: int | None = None
    retry_policy: str | None = None
    unique_key: str | None = None  # see `Backend.add_unique_tasks`


@dataclass(frozen=True)
class ClaimedTask:
    """A task handed to one worker under a lease.

    `attempt` is this attempt's number in the task's history (every attempt it ever had);
    `tries` counts the attempts since the last `requeue`, this one included: what a retry
    budget is measured against (the database keeps `attempts` and `retry_base`, the count
    at the last requeue, and the claim returns the difference). `token` is
    the fencing token: only a settlement carrying it is accepted. `lost_attempt` is set when
    the task was taken over from a worker whose lease expired (that attempt is already in
    the history). `cancel_requested` survives such a takeover. `last_delay` is the backoff
    chosen after the previous failed attempt, if any (decorrelated jitter grows from it).
    `ahead`: claimed ahead, to wait in the worker's hand; the database has it as not started
    (a lost lease costs it no attempt) until the worker says it started.
    `decided` is set on a lost lease whose budget was spent: the claim itself ended it
    (`state.LOST_WHEN_SPENT`, no lease, nothing to run); the worker only reports it.
    """

    task_id: str
    name: str
    payload: bytes
    attempt: int
    tries: int
    token: int
    scheduled_for: float
    enqueued_at: float
    claimed_at: float
    lost_attempt: LostAttempt | None = None
    last_delay: float | None = None
    cancel_requested: bool = False
    max_attempts: int | None = None
    ahead: bool = False
    decided: TaskStatus | None = None

    @classmethod
    def from_row(
        cls, row: Sequence[Any], now: float, *, ahead: bool = False, decided: str | None = None
    ) -> ClaimedTask:
        """A claim's returned columns, in both backends' CLAIM_RETURNING order: id, name,
        payload, attempt, try number, token, due_at, enqueued_at, the lost attempt's
        worker, start and schedule, last delay, cancel requested, max attempts (and the
        status the claim decided, for a spent lost lease)."""
        (task_id, name, payload, attempt, tries, token, due_at, enqueued_at,
         lost_worker, lost_started, lost_scheduled, last_delay, cancel, budget) = row  # fmt: skip
        lost = None
        if lost_worker is not None:
            lost = LostAttempt(
                worker_id=lost_worker, started_at=lost_started, scheduled_for=lost_scheduled
            )
        return cls(task_id=task_id, name=name, payload=payload, attempt=attempt, tries=tries,
                   token=token, scheduled_for=due_at, enqueued_at=enqueued_at, claimed_at=now,
                   lost_attempt=lost, last_delay=last_delay, cancel_requested=bool(cancel),
                   max_attempts=budget, ahead=ahead,
                   decided=None if decided is None else TaskStatus(decided))  # fmt: skip


@dataclass(frozen=True)
class LostAttempt:
    """The attempt of a worker that died (or stalled) holding a task's lease."""

    worker_id: str
    started_at: float
    scheduled_for: float


@dataclass(frozen=True)
class Settlement:
    """What to store for a claimed task once the state module has decided.

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
    # What both backends store besides the fields above, derived once, here, when the
    # settlement is made (plain attributes: a backend reads them, it calls nothing):
    #: When the task finished: `now` if its next state is final, else None.
    finished_at: float | None = field(init=False, repr=False)
    #: A refund that brings no error of its own (a hand-back, a deferral) keeps the last
    #: error on the row.
    keeps_error: bool = field(init=False, repr=False)
    #: Decorrelated jitter grows from the delay chosen last time: only a retry stores a
    #: new one.
    keeps_last_delay: bool = field(init=False, repr=False)
    next_delay: float | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        set_once = object.__setattr__  # a frozen dataclass: its fields are set here, once
        set_once(self, "finished_at", self.now if self.status in TERMINAL else None)
        set_once(self, "keeps_error", self.refund_attempt and self.error_type is None)
        set_once(self, "keeps_last_delay", self.status is not TaskStatus.RETRYING)
        set_once(self, "next_delay", None if self.attempt is None else self.attempt.next_delay)
