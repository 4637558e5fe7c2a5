"""Periodic tasks on PostgreSQL: the statements (same tables and meaning as SQLite's,
`sitq.backends.sqlite.schedules`).

Each tick is enqueued once, whatever the number of workers and machines: in one
transaction a worker moves the schedule's next tick on only if it is still the one it read
(`ADVANCE`, a compare-and-set: a second worker's UPDATE waits for the first one's row lock,
then finds the row changed and updates nothing), records the tick under the primary key
(schedule, tick_at) with `ON CONFLICT DO NOTHING`, and adds the task.
"""

from __future__ import annotations

from sitq.backends.columns import SCHEDULE_COLUMNS

#: The tables, created with the rest of the schema (`sql.SCHEMA`).
SCHEDULE_TABLES = """
-- Periodic tasks: when each ticks, and the call each tick enqueues (sitq.engine.schedules).
CREATE TABLE IF NOT EXISTS sitq_schedules (
    name          TEXT PRIMARY KEY,
    task_name     TEXT NOT NULL,
    payload       BYTEA NOT NULL,           -- the call, serialized for 'sitq-schedule:<name>'
    every         DOUBLE PRECISION,         -- seconds between ticks, or NULL for cron
    cron          TEXT,                     -- five fields, read in tz
    tz            TEXT NOT NULL,
    missed        TEXT NOT NULL,            -- 'last' or 'skip' (sitq.policy.schedule)
    priority      BIGINT NOT NULL DEFAULT 0,
    max_attempts  INTEGER,
    retry_policy  TEXT,
    next_at       DOUBLE PRECISION NOT NULL, -- the next tick to enqueue
    created_at    DOUBLE PRECISION NOT NULL,
    last_tick_at  DOUBLE PRECISION,
    last_task_id  TEXT,
    last_error    TEXT
);
-- One row per tick enqueued: the key makes a second enqueue of a tick impossible.
CREATE TABLE IF NOT EXISTS sitq_schedule_ticks (
    schedule      TEXT NOT NULL,
    tick_at       DOUBLE PRECISION NOT NULL,
    task_id       TEXT NOT NULL,
    enqueued_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (schedule, tick_at)
);
"""


#: Insert, or replace everything but the next tick, which is kept while the timing stays.
SAVE_SCHEDULE = f"""
INSERT INTO sitq_schedules AS s (name, task_name, payload, every, cron, tz, missed, next_at,
                                 created_at, priority, max_attempts, retry_policy)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)  -- NewSchedule's fields
ON CONFLICT (name) DO UPDATE SET
    task_name = excluded.task_name,
    payload = excluded.payload,
    missed = excluded.missed,
    priority = excluded.priority,
    max_attempts = excluded.max_attempts,
    retry_policy = excluded.retry_policy,
    last_error = NULL,
    next_at = CASE WHEN s.every IS NOT DISTINCT FROM excluded.every
                        AND s.cron IS NOT DISTINCT FROM excluded.cron
                        AND s.tz = excluded.tz THEN s.next_at ELSE excluded.next_at END,
    every = excluded.every,
    cron = excluded.cron,
    tz = excluded.tz
RETURNING {SCHEDULE_COLUMNS}
"""

LIST_SCHEDULES = f"SELECT {SCHEDULE_COLUMNS} FROM sitq_schedules ORDER BY name"
DELETE_SCHEDULE = "DELETE FROM sitq_schedules WHERE name = $1"

#: The compare-and-set: only the worker that read this next tick moves it on.
ADVANCE = """
UPDATE sitq_schedules SET next_at = $1, last_error = $2
WHERE name = $3 AND next_at = $4
"""
RECORD_TICK = """
INSERT INTO sitq_schedule_ticks (schedule, tick_at, task_id, enqueued_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (schedule, tick_at) DO NOTHING
"""
LAST_TICK = "UPDATE sitq_schedules SET last_tick_at = $1, last_task_id = $2 WHERE name = $3"
FORGET_OLD_TICKS = """
DELETE FROM sitq_schedule_ticks
WHERE schedule = $1 AND tick_at < (SELECT tick_at FROM sitq_schedule_ticks WHERE schedule = $1
                                   ORDER BY tick_at DESC LIMIT 1 OFFSET $2)
"""
#: Tick rows kept per schedule (the newest), as on SQLite.
TICKS_KEPT = 1000
