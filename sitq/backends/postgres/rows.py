"""Rows to and from PostgreSQL: sitq's dataclasses as the tuples its statements take and
return, with the same meanings as the SQLite backend's (`sitq.backends.sqlite.ops`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from sitq.backends.base import ClaimedTask, NewTask, Settlement
from sitq.backends.columns import ATTEMPT_COLUMNS, TASK_COLUMNS
from sitq.errors import SchemaVersionError
from sitq.task import Attempt, TaskInfo, TaskStatus


def task_row(t: NewTask) -> tuple[Any, ...]:
    return (t.task_id, t.name, t.payload, str(t.status), t.priority, t.enqueued_at, t.due_at,
            t.max_attempts, t.retry_policy)  # fmt: skip


GET_TASKS = f"SELECT {TASK_COLUMNS} FROM sitq_tasks WHERE id = ANY($1::text[])"
LIST_TASKS = f"SELECT {TASK_COLUMNS} FROM sitq_tasks"
LIST_ATTEMPTS = f"SELECT {ATTEMPT_COLUMNS} FROM sitq_attempts"
#: Where a claim's row has `next_due` (see `sql.claim_rows`).
NEXT_DUE = 19


def claimed(row: Any, now: float) -> ClaimedTask:
    """A row of sql.CLAIM: a "taken first" flag, CLAIM_RETURNING's columns, two for order,
    whether it is claimed ahead, and the status the claim decided (a spent lost lease; else
    NULL)."""
    return ClaimedTask.from_row(row[1:15], now, ahead=row[17], decided=row[18])


def settle_row(s: Settlement) -> tuple[Any, ...]:
    """One settlement as a row of sql.SETTLE's batch: what to store, then its record."""
    a = s.attempt
    return (
        s.task_id, s.token, str(s.status), s.due_at, int(s.refund_attempt), s.finished_at,
        s.result, s.keeps_error, s.error, s.error_type, s.traceback, s.keeps_last_delay,
        s.next_delay, *(attempt_row(a) if a is not None else (None,) * 10),
    )  # fmt: skip


def attempt_row(a: Attempt) -> tuple[Any, ...]:
    return (a.task_name, a.attempt, a.worker_id, a.scheduled_for, a.started_at, a.finished_at,
            a.outcome, a.error_type, a.error_message, a.next_delay)  # fmt: skip


def rounds(settlements: Sequence[Settlement]) -> list[list[int]]:
    """Positions split so no round settles one task twice (the second must see the first,
    as it would in SQLite, where settlements are applied one after another)."""
    rounds: list[list[int]] = []
    seen: Counter[str] = Counter()
    for position, s in enumerate(settlements):
        index = seen[s.task_id]
        seen[s.task_id] += 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(position)
    return rounds


def task_info(row: Any) -> TaskInfo:
    """A row of TASK_COLUMNS, in order, as a TaskInfo (the status text becomes the enum)."""
    task_id, name, status, *rest, result = row
    # mypy cannot count *rest: the row holds one value per TaskInfo field, result last
    return TaskInfo(task_id, name, TaskStatus(status), *rest, result=result)  # type: ignore[misc]


def status(value: str | None) -> TaskStatus | None:
    return None if value is None else TaskStatus(value)


def row_count(status: str) -> int:
    """asyncpg reports "UPDATE 3" / "DELETE 0": the number is the rows changed."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def version(found: str, schema: str) -> int:
    try:
        return int(found)
    except ValueError:
        raise SchemaVersionError(
            f"schema {schema!r} has sitq schema version {found!r}, which is not a number: it "
            "was not written by sitq, or it was damaged. Use another schema name."
        ) from None
