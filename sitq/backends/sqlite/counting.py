"""Counting tasks by state: what `counts()` reads on SQLite, and the triggers that keep it.

The history grows without end (a week of retention can keep a million finished tasks),
and counting a million rows takes SQLite tens of milliseconds. So the finished states are
counted as they change, by triggers on sitq_tasks: whoever writes the row (this sitq, an
older one in another process, a `DELETE` typed by hand), the count moves in the same
transaction. The unfinished states are counted row by row, through the status index: there
are only as many as the backlog, and a trigger on every enqueue and claim would cost each
of them one more page written per commit (measured: about 6 us a task on a drain, raw).
(Schema version 5; `sitq.backends.sqlite.schema` calls `keep` when it sets a file up.)
"""

from __future__ import annotations

import sqlite3

from sitq.backends.sqlite.sql import status_is_one_of
from sitq.task import TERMINAL, TaskStatus

#: The states counted by the triggers: a task reaches them once and rarely leaves.
COUNTED = TERMINAL
IS_COUNTED_NEW = status_is_one_of(COUNTED, "NEW.")
IS_COUNTED_OLD = status_is_one_of(COUNTED, "OLD.")

#: The counter table and the triggers that keep it (each statement runs on its own: a
#: trigger's body has semicolons of its own). `keep` fills it when it is new.
COUNTS_TABLE = """
CREATE TABLE IF NOT EXISTS sitq_counts (
    status TEXT PRIMARY KEY,
    n      INTEGER NOT NULL
) WITHOUT ROWID"""
COUNTS_TRIGGERS = {
    "sitq_counts_insert": f"""
CREATE TRIGGER sitq_counts_insert AFTER INSERT ON sitq_tasks WHEN {IS_COUNTED_NEW}
BEGIN UPDATE sitq_counts SET n = n + 1 WHERE status = NEW.status; END""",
    "sitq_counts_delete": f"""
CREATE TRIGGER sitq_counts_delete AFTER DELETE ON sitq_tasks WHEN {IS_COUNTED_OLD}
BEGIN UPDATE sitq_counts SET n = n - 1 WHERE status = OLD.status; END""",
    "sitq_counts_leave": f"""
CREATE TRIGGER sitq_counts_leave AFTER UPDATE OF status ON sitq_tasks
WHEN OLD.status IS NOT NEW.status AND {IS_COUNTED_OLD}
BEGIN UPDATE sitq_counts SET n = n - 1 WHERE status = OLD.status; END""",
    "sitq_counts_enter": f"""
CREATE TRIGGER sitq_counts_enter AFTER UPDATE OF status ON sitq_tasks
WHEN OLD.status IS NOT NEW.status AND {IS_COUNTED_NEW}
BEGIN UPDATE sitq_counts SET n = n + 1 WHERE status = NEW.status; END""",
}
#: A fresh count of the finished states, from the rows (a new counter table starts here).
RECOUNT = f"""
INSERT INTO sitq_counts (status, n)
SELECT status, COUNT(*) FROM sitq_tasks WHERE {status_is_one_of(COUNTED)} GROUP BY status
"""
#: Every counted state has its row (the triggers only UPDATE): 0 where none was found.
COUNTS_ROWS = "INSERT OR IGNORE INTO sitq_counts (status, n) VALUES " + ", ".join(
    f"('{status.value}', 0)" for status in sorted(COUNTED)
)
#: counts(): the counters, and the unfinished rows counted through the status index.
COUNTS = f"""
SELECT status, n FROM sitq_counts
UNION ALL
SELECT status, COUNT(*) FROM sitq_tasks
 WHERE {status_is_one_of(frozenset(TaskStatus) - COUNTED)} GROUP BY status
"""
#: The same for a file too old to have the counter table, opened read-only (never upgraded).
COUNT_EVERY_ROW = "SELECT status, COUNT(*) FROM sitq_tasks GROUP BY status"


def keep(conn: sqlite3.Connection) -> None:
    """The counter table of the finished states and its triggers (COUNTS_TRIGGERS).
    A file without them (older than schema version 5), or with triggers an older sitq
    defined differently, gets the triggers anew and the counters filled from its rows, in
    the set-up's transaction: no write can slip in between the count and the first trigger.
    """
    conn.execute(COUNTS_TABLE)
    stored = dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))
    wanted = {name: " ".join(text.split()) for name, text in COUNTS_TRIGGERS.items()}
    if any(" ".join(str(stored.get(name)).split()) != text for name, text in wanted.items()):
        for name in wanted:
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        conn.execute("DELETE FROM sitq_counts")
        conn.execute(RECOUNT)
        for text in COUNTS_TRIGGERS.values():
            conn.execute(text)
    conn.execute(COUNTS_ROWS)


def read(conn: sqlite3.Connection) -> dict[TaskStatus, int]:
    """How many tasks are in each state: the finished ones from their counters (as cheap at
    a million kept as at ten), the others counted (COUNTS). A file too old to have the
    counters, opened read-only (so never upgraded), is counted row by row."""
    try:
        rows = conn.execute(COUNTS).fetchall()
    except sqlite3.OperationalError as exc:
        if "sitq_counts" not in str(exc):
            raise
        rows = conn.execute(COUNT_EVERY_ROW).fetchall()
    found = {TaskStatus(status): n for status, n in rows}
    return {status: found.get(status, 0) for status in TaskStatus}
