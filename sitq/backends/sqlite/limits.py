"""Where the database says no: unique keys and rate limits, on SQLite.

Each function runs whole in the connection's thread, in one transaction that holds the
write lock (`ops.in_transaction`), like the backend's other operations. Two processes
racing to enqueue one key, or two workers racing for a rate limit's last start, take
turns on that lock, and the second sees what the first committed.
"""

from __future__ import annotations

import sqlite3

from sitq.backends.base import NewTask, Now, read_now
from sitq.backends.sqlite import ops, sql
from sitq.policy.rate_limits import RateLimit

#: A new task that brings its unique key: not inserted if an unfinished task holds the key
#: (the partial UNIQUE index `sitq_tasks_unique` refuses it, and DO NOTHING skips it).
INSERT_UNIQUE_TASK = """
INSERT INTO sitq_tasks (id, name, payload, status, due_at, enqueued_at, priority,
                        max_attempts, retry_policy, unique_key)  -- NewTask's order
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT DO NOTHING
"""

#: Starts of a name that left every window: no rate limit counts them any more.
FORGET_STARTS = "DELETE FROM sitq_rate_starts WHERE name = ? AND started_at <= ?"
#: The newest starts of a name since a moment (at most as many as the limit counts).
RECENT_STARTS = """
SELECT started_at FROM sitq_rate_starts WHERE name = ? AND started_at > ?
 ORDER BY started_at DESC LIMIT ?
"""
RECORD_START = "INSERT INTO sitq_rate_starts (name, started_at) VALUES (?, ?)"


def add_unique_tasks(conn: sqlite3.Connection, rows: list[NewTask]) -> list[str]:
    """Insert each row unless its key is held; return the holder's id for each row (its
    own when inserted). In one transaction: all rows, or none."""

    def work() -> list[str]:
        ids = []
        for row in rows:
            inserted = conn.execute(INSERT_UNIQUE_TASK, row).rowcount == 1
            if inserted or row.unique_key is None:
                ids.append(row.task_id)
                continue
            holder = conn.execute(sql.KEY_HOLDER, (row.unique_key, row.task_id)).fetchone()
            ids.append(holder[0])  # the write lock is ours: the holder cannot finish meanwhile
        return ids

    return ops.in_transaction(conn, work)


def take_rate_slot(
    conn: sqlite3.Connection, name: str, limit: int, period: float, now: Now
) -> float | None:
    """Record a start of `name` if its window has room (`RateLimit.wait`): None; else the
    seconds until it has, and nothing recorded."""

    def work() -> float | None:
        moment = read_now(now)  # after BEGIN IMMEDIATE: no other start can slip in
        since = moment - period
        conn.execute(FORGET_STARTS, (name, since))
        starts = [row[0] for row in conn.execute(RECENT_STARTS, (name, since, limit))]
        wait = RateLimit(limit, period).wait(starts, moment)
        if wait is None:
            conn.execute(RECORD_START, (name, moment))
        return wait

    return ops.in_transaction(conn, work)
