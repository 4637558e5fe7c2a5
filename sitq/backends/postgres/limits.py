"""Where the database says no: unique keys and rate limits, on PostgreSQL.

Each function takes a pooled connection and runs one transaction. Racing enqueuers of
one key meet in the partial UNIQUE index `sitq_tasks_unique`: the second INSERT waits for
the first's transaction, then does nothing, and reads the holder's id. Racing workers on
one rate limit's slots take turns on a transaction-scoped advisory lock per task name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import asyncpg

from sitq.backends.base import NewTask
from sitq.backends.postgres import deps
from sitq.backends.postgres import rows as convert
from sitq.backends.postgres.sql import HOLDS_KEY_SQL, _in, lease_clock
from sitq.errors import UniqueKeyTakenError
from sitq.policy.rate_limits import RateLimit
from sitq.policy.state import KEEPS_BOOKED_SLOT, ParentsVerdict, on_requeue
from sitq.task import TaskStatus

Connection = Any  # asyncpg.Connection: asyncpg has no type hints
T = TypeVar("T")

#: The schema's part for unique keys and rate limits (run after `sql.SCHEMA`, version 2).
SCHEMA = f"""
ALTER TABLE sitq_tasks ADD COLUMN IF NOT EXISTS unique_key TEXT;  -- a version 1 schema
-- One unfinished task per unique key (`state.HOLDS_UNIQUE_KEY`), enforced here.
CREATE UNIQUE INDEX IF NOT EXISTS sitq_tasks_unique
    ON sitq_tasks (unique_key) WHERE status IN ({HOLDS_KEY_SQL});
-- Rate limits' slots by task name, recent and booked (`sitq.policy.rate_limits`).
CREATE TABLE IF NOT EXISTS sitq_rate_starts (
    name       TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    task_id    TEXT                      -- a booked slot's task (NULL once started)
);
CREATE INDEX IF NOT EXISTS sitq_rate_starts_name ON sitq_rate_starts (name, started_at);
CREATE INDEX IF NOT EXISTS sitq_rate_starts_task ON sitq_rate_starts (task_id);
"""

#: Insert the rows whose key nobody holds ($10: each row's key, NULL for none). DO NOTHING
#: skips a row that would be a second holder of a key (or whose id is there already: a
#: batch run again after its COMMIT's answer was lost). Returns the ids inserted.
INSERT_UNIQUE = """
INSERT INTO sitq_tasks (id, name, payload, status, priority, enqueued_at, due_at,
                        max_attempts, retry_policy, unique_key)
SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bigint[],
                     $6::float8[], $7::float8[], $8::int[], $9::text[], $10::text[])
ON CONFLICT DO NOTHING
RETURNING id
"""

#: For each row ($1 ids, $2 keys): the task that stands in its place, if any: itself, or
#: the unfinished task that holds its key.
HOLDERS = f"""
SELECT n.place, COALESCE(own.id, holder.id)
  FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS n(id, key, place)
  LEFT JOIN sitq_tasks AS own ON own.id = n.id
  LEFT JOIN sitq_tasks AS holder
         ON holder.unique_key = n.key AND holder.status IN ({HOLDS_KEY_SQL})
"""

STATUS_AND_KEY_FOR_UPDATE = "SELECT status, unique_key FROM sitq_tasks WHERE id = $1 FOR UPDATE"
KEY_HOLDER = f"""
SELECT id FROM sitq_tasks WHERE unique_key = $1 AND id <> $2 AND status IN ({HOLDS_KEY_SQL})
"""

#: Rate limits: one turn at a time per task name ({key}: a number made from the schema
#: and the name, `turn_key`), and the slots are written without waiting for the disk: a
#: server crash may forget the last few (a few more starts after it), never a task.
RATE_TURN = "SET LOCAL synchronous_commit = off; SELECT pg_advisory_xact_lock({key})"
#: Once the turn is ours, in one look: the time ($1: the worker's virtual time, or NULL for
#: the server's), the slot booked for task $4, and the N-th latest slot of name $2 less than
#: a period ($3) old (OFFSET $5 = N - 1; none: fewer than N), past or booked. Slots a period
#: old go; one booked for a task that has finished since (cancelled as it waited) is free.
SLOT_LOOK = f"""
WITH now AS (SELECT {lease_clock("$1")} AS t),
forgot AS (DELETE FROM sitq_rate_starts WHERE name = $2 AND started_at <= (SELECT t FROM now) - $3)
SELECT (SELECT t FROM now),
       (SELECT started_at FROM sitq_rate_starts
         WHERE task_id = $4 AND name = $2 AND started_at > (SELECT t FROM now) - $3),
       (SELECT started_at FROM sitq_rate_starts AS r
         WHERE name = $2 AND started_at > (SELECT t FROM now) - $3
           AND (task_id IS NULL OR EXISTS (
                SELECT 1 FROM sitq_tasks AS t WHERE t.id = r.task_id
                   AND t.status IN ({_in(KEEPS_BOOKED_SLOT)})))
         ORDER BY started_at DESC LIMIT 1 OFFSET $5)
"""
RECORD_SLOT = "INSERT INTO sitq_rate_starts (name, started_at, task_id) VALUES ($1, $2, $3)"
SPEND_BOOKING = "UPDATE sitq_rate_starts SET task_id = NULL WHERE task_id = $1 AND name = $2"


async def add_unique_tasks(conn: Connection, tasks: Sequence[NewTask]) -> tuple[list[str], bool]:
    """Insert each task unless its key is held; return, for each, the id that holds its
    place, and whether any was inserted. A row whose holder finished between the INSERT
    and the look (its key free again) is inserted in the next round."""
    found: dict[int, str] = {}
    added = False
    while len(found) < len(tasks):
        rest = [i for i in range(len(tasks)) if i not in found]
        rows = [(*convert.task_row(tasks[i]), tasks[i].unique_key) for i in rest]
        columns = [list(column) for column in zip(*rows, strict=True)]
        added |= bool(await conn.fetch(INSERT_UNIQUE, *columns))
        ids, keys = columns[0], columns[-1]
        for place, holder in await conn.fetch(HOLDERS, ids, keys):
            if holder is not None:
                found[rest[place - 1]] = holder  # WITH ORDINALITY counts from 1
    return [found[i] for i in range(len(tasks))], added


async def requeue_decision(
    conn: Connection, task_id: str, now: float
) -> tuple[TaskStatus | None, TaskStatus | None, ParentsVerdict | None]:
    """The task's status (locked), `state.on_requeue`'s answer asked with its key's holder
    and its parents' verdict (`postgres.deps`), and that verdict; UniqueKeyTakenError when
    only that holder stands in the way."""
    row = await conn.fetchrow(STATUS_AND_KEY_FOR_UPDATE, task_id)
    old, key = (None, None) if row is None else (convert.status(row[0]), row[1])
    holder = await conn.fetchval(KEY_HOLDER, key, task_id) if key is not None else None
    parents = await deps.requeue_verdict(conn, task_id, now)
    new = on_requeue(old, key_held_by=holder, parents=parents)
    if new is None and holder is not None and on_requeue(old, parents=parents) is not None:
        raise UniqueKeyTakenError.of(task_id, str(key), holder)
    return old, new, parents


async def take_rate_slot(
    conn: Connection, key: int, name: str, limit: RateLimit, at: float | None, task_id: str
) -> float | None:
    """Give task `task_id` of `name` its slot (`RateLimit.slot`): None, start now; else the
    seconds until its booked slot. `at`: the worker's virtual time, None for the server's."""
    async with conn.transaction():
        await conn.execute(RATE_TURN.format(key=int(key)))
        moment, booked, nth = await conn.fetchrow(
            SLOT_LOOK, at, name, limit.period, task_id, limit.count - 1
        )
        chosen = limit.slot(booked, nth, moment)
        if chosen.spent_booking:
            await conn.execute(SPEND_BOOKING, task_id, name)
        if chosen.book is not None:
            booking = None if chosen.wait is None else task_id
            await conn.execute(RECORD_SLOT, name, chosen.book, booking)
    return chosen.wait


def turn_key(schema: str, name: str) -> int:
    """The advisory lock number of a task name's rate limit in a schema (64 bits, signed)."""
    digest = hashlib.blake2b(f"sitq rate limit: {schema}.{name}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


#: Errors after which a transaction of this module simply runs again: two batches that
#: insert the same keys in opposite orders (a deadlock), or a requeue that met a task
#: inserted with its key while it looked.
RUN_AGAIN = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.UniqueViolationError)
TRIES = 5


async def again_on_conflict(operation: Callable[[Connection], Awaitable[T]], conn: Connection) -> T:
    """`operation(conn)` (a whole transaction), run again after a RUN_AGAIN error."""
    for _ in range(TRIES - 1):
        try:
            return await operation(conn)
        except RUN_AGAIN:
            continue
    return await operation(conn)
