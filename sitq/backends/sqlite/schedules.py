"""Periodic tasks on SQLite: the statements, and the operations that run them whole in the
connection's thread (as `sitq.backends.sqlite.ops` does for tasks).

Each tick is enqueued once because one transaction (a write lock: SQLite has one writer)
does three things or none: it moves the schedule's next tick on only if it is still the
one the worker read (a compare-and-set), records the tick under the primary key
(schedule, tick_at), and inserts the task. A second worker that read the same next tick
finds it moved, and a second row for the tick cannot exist.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sitq.backends.columns import SCHEDULE_COLUMNS
from sitq.backends.schedule_rows import NewSchedule, ScheduleFire
from sitq.backends.sqlite import sql
from sitq.backends.sqlite.ops import FULL_COLUMNS, in_transaction
from sitq.overview import ScheduleInfo

#: Tick rows kept per schedule (the newest); older ones go as new ticks are recorded. The
#: compare-and-set on next_at already refuses a tick whose time has passed.
TICKS_KEPT = 1000


#: Insert, or replace everything but the next tick, which is kept while the timing stays.
SAVE_SCHEDULE = """
INSERT INTO sitq_schedules (name, task_name, payload, every, cron, tz, missed, next_at,
                            created_at, priority, max_attempts, retry_policy)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)  -- the order of NewSchedule's fields
ON CONFLICT (name) DO UPDATE SET
    task_name = excluded.task_name,
    payload = excluded.payload,
    missed = excluded.missed,
    priority = excluded.priority,
    max_attempts = excluded.max_attempts,
    retry_policy = excluded.retry_policy,
    last_error = NULL,
    next_at = CASE WHEN every IS excluded.every AND cron IS excluded.cron
                        AND tz IS excluded.tz THEN next_at ELSE excluded.next_at END,
    every = excluded.every,
    cron = excluded.cron,
    tz = excluded.tz
"""

GET_SCHEDULE = f"SELECT {SCHEDULE_COLUMNS} FROM sitq_schedules WHERE name = ?"
LIST_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS} FROM sitq_schedules ORDER BY name"
DELETE_SCHEDULE = "DELETE FROM sitq_schedules WHERE name = ?"
HAS_SCHEDULES = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sitq_schedules'"

#: The compare-and-set: only the worker that read this next tick moves it on.
ADVANCE = """
UPDATE sitq_schedules SET next_at = ?, last_error = ?
WHERE name = ? AND next_at = ?
"""
RECORD_TICK = """
INSERT INTO sitq_schedule_ticks (schedule, tick_at, task_id, enqueued_at)
VALUES (?, ?, ?, ?)
ON CONFLICT (schedule, tick_at) DO NOTHING
"""
LAST_TICK = "UPDATE sitq_schedules SET last_tick_at = ?, last_task_id = ? WHERE name = ?"
FORGET_OLD_TICKS = """
DELETE FROM sitq_schedule_ticks
WHERE schedule = ? AND tick_at < (SELECT tick_at FROM sitq_schedule_ticks WHERE schedule = ?
                                  ORDER BY tick_at DESC LIMIT 1 OFFSET ?)
"""


def info(row: Any) -> ScheduleInfo:
    return ScheduleInfo(*row)


def save(conn: sqlite3.Connection, schedule: NewSchedule) -> ScheduleInfo:
    def work() -> ScheduleInfo:
        conn.execute(SAVE_SCHEDULE, tuple(schedule))
        return info(conn.execute(GET_SCHEDULE, (schedule.name,)).fetchone())

    return in_transaction(conn, work)


def delete(conn: sqlite3.Connection, name: str) -> bool:
    return in_transaction(conn, lambda: conn.execute(DELETE_SCHEDULE, (name,)).rowcount == 1)


def list_all(conn: sqlite3.Connection) -> list[ScheduleInfo]:
    """Every schedule; none in a file made before schedules existed (read-only, it is
    never upgraded, so the table may be missing)."""
    if conn.execute(HAS_SCHEDULES).fetchone() is None:
        return []
    return [info(row) for row in conn.execute(LIST_SCHEDULES).fetchall()]


def fire(conn: sqlite3.Connection, fire: ScheduleFire) -> bool:
    """Advance, record the tick and add its task, in one transaction (module docstring)."""

    def work() -> bool:
        advanced = conn.execute(
            ADVANCE, (fire.next_at, fire.error, fire.name, fire.expected_next_at)
        ).rowcount
        if advanced != 1 or fire.task is None or fire.tick_at is None:
            return False
        task = fire.task
        recorded = conn.execute(RECORD_TICK, (fire.name, fire.tick_at, task.task_id, fire.now))
        if recorded.rowcount != 1:
            return False
        conn.execute(sql.INSERT_TASK, task[:FULL_COLUMNS])  # NewTask is in INSERT_TASK order
        conn.execute(LAST_TICK, (fire.tick_at, task.task_id, fire.name))
        conn.execute(FORGET_OLD_TICKS, (fire.name, fire.name, TICKS_KEPT - 1))
        return True

    return in_transaction(conn, work)
