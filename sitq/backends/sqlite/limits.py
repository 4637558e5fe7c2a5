"""Where the database says no: unique keys and rate limits, on SQLite.

Each function runs whole in the connection's thread, in one transaction that holds the
write lock (`ops.in_transaction`), like the backend's other operations. Two processes
racing to enqueue one key, or two workers racing for a rate limit's last slot, take
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

#: Slots of a name that left every window: no rate limit counts them any more.
FORGET_SLOTS = "DELETE FROM sitq_rate_starts WHERE name = ? AND started_at <= ?"
#: The slot booked for a task, if any.
BOOKED_SLOT = "SELECT started_at FROM sitq_rate_starts WHERE task_id = ? AND name = ?"
#: The N-th latest slot of a name less than a period old, past or booked (OFFSET N - 1;
#: none: fewer than N). A slot booked for a task that has finished since (cancelled as it
#: waited) is free again.
NTH_LATEST_SLOT = f"""
SELECT started_at FROM sitq_rate_starts AS r WHERE name = ? AND started_at > ?
   AND (task_id IS NULL OR EXISTS (SELECT 1 FROM sitq_tasks WHERE id = r.task_id
                                                             AND {sql.KEEPS_SLOT}))
 ORDER BY started_at DESC LIMIT 1 OFFSET ?
"""
RECORD_SLOT = "INSERT INTO sitq_rate_starts (name, started_at, task_id) VALUES (?, ?, ?)"
#: A task starts on its booked slot: from now on the slot is a plain start.
SPEND_BOOKING = "UPDATE sitq_rate_starts SET task_id = NULL WHERE task_id = ? AND name = ?"


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
    conn: sqlite3.Connection, name: str, limit: int, period: float, now: Now, task_id: str
) -> float | None:
    """Give task `task_id` of `name` its slot (`RateLimit.slot`): None, start now; else the
    seconds until its booked slot."""

    def work() -> float | None:
        moment = read_now(now)  # after BEGIN IMMEDIATE: no other worker books meanwhile
        since = moment - period
        conn.execute(FORGET_SLOTS, (name, since))
        booked = conn.execute(BOOKED_SLOT, (task_id, name)).fetchone()
        nth = conn.execute(NTH_LATEST_SLOT, (name, since, limit - 1)).fetchone()
        chosen = RateLimit(limit, period).slot(None if booked is None else booked[0],
                                               None if nth is None else nth[0], moment)  # fmt: skip
        if chosen.spent_booking:
            conn.execute(SPEND_BOOKING, (task_id, name))
        if chosen.book is not None:
            booking = None if chosen.wait is None else task_id
            conn.execute(RECORD_SLOT, (name, chosen.book, booking))
        return chosen.wait

    return ops.in_transaction(conn, work)
