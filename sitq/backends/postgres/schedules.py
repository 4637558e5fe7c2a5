"""Periodic tasks on PostgreSQL: the statements (same tables and meaning as SQLite's,
`sitq.backends.sqlite.schedules`).

Each tick is enqueued once, whatever the number of workers and machines: in one
transaction a worker moves the schedule's next tick on only if it is still the one it read
(`ADVANCE`, a compare-and-set: a second worker's UPDATE waits for the first one's row lock,
then finds the row changed and updates nothing), records the tick under the primary key
(schedule, tick_at) with `ON CONFLICT DO NOTHING`, and adds the task.
"""

from __future__ import annotations

SCHEDULE_COLUMNS = """name, task_name, every, cron, tz, missed, next_at, created_at,
    last_tick_at, last_task_id, last_error, priority, max_attempts, retry_policy, payload"""

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
HAS_SCHEDULES = "SELECT to_regclass('sitq_schedules') IS NOT NULL"

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
