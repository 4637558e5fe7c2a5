"""The columns both backends read, in the order the records they become take them: the
same SQL text on SQLite and on PostgreSQL, so it is written once, here. (Each backend's
statements around them stay in its own `sql.py`, in its own dialect.)"""

#: A task's row, in the order `task_info` and `TaskInfo` take them (result last).
TASK_COLUMNS = (
    "id, name, status, attempts, enqueued_at, due_at, priority, started_at, finished_at, "
    "worker_id, error, error_type, traceback, progress, progress_message, max_attempts, "
    "retry_policy, attempts - retry_base, result"
)
#: An attempt's record, in the order of `Attempt`'s fields.
ATTEMPT_COLUMNS = (
    "task_id, task_name, attempt, worker_id, scheduled_for, started_at, finished_at, "
    "outcome, error_type, error_message, next_delay"
)
#: A schedule's row, in the order of `ScheduleInfo`'s fields.
SCHEDULE_COLUMNS = """name, task_name, every, cron, tz, missed, next_at, created_at,
    last_tick_at, last_task_id, last_error, priority, max_attempts, retry_policy, payload"""
