"""The SQLite schema and statements, as plain SQL a student can read and run by hand.

No rule about *which* state comes next lives here (that is `sitq.policy.state`): these statements
store what they are given, check the fencing token in the UPDATE itself, and pick rows by
indexes that keep every claim as cheap at 100,000 waiting tasks as at 10.
"""

from __future__ import annotations

from sitq.backends.columns import ATTEMPT_COLUMNS
from sitq.policy.state import (
    CLAIMABLE,
    HOLDS_UNIQUE_KEY,
    KEEPS_BOOKED_SLOT,
    LATE_OUTCOME_REPLACES,
    LOST_CANCEL_MESSAGE,
    LOST_WHEN_SPENT,
    LOST_WHEN_SPENT_CANCELLED,
    PRUNABLE,
)
from sitq.task import TaskStatus


def status_is_one_of(statuses: frozenset[TaskStatus], row: str = "") -> str:
    """`(status = 'a' OR status = 'b')`, sorted so the text (and index matching) never varies.

    Why not `status IN ('a', 'b', 'c')`: for a list of three or more constants SQLite builds
    a small temporary table at every run of a statement, and that includes checking a
    partial index's WHERE on every insert and update. Each such table takes and gives back
    about 90 KB of memory, and handing memory back to the system and faulting it in again
    cost more than the statement itself (a claim: 300 us instead of 75). The ORs are checked
    in place. The queries use the same text as the indexes, so SQLite sees they match."""
    return "(" + " OR ".join(f"{row}status = '{s.value}'" for s in sorted(statuses)) + ")"


IS_WAITING = status_is_one_of(CLAIMABLE)
IS_PRUNABLE = status_is_one_of(PRUNABLE)
HOLDS_KEY = status_is_one_of(HOLDS_UNIQUE_KEY)
KEEPS_SLOT = status_is_one_of(KEEPS_BOOKED_SLOT)

SCHEMA_VERSION = 5  # 3: partial indexes say (status = ... OR ...), see _status_is_one_of
# 4: unique keys (the unique_key column, its partial UNIQUE index), rate limits (the
# sitq_rate_starts table), periodic tasks (sitq_schedules, sitq_schedule_ticks) and
# dependencies (sitq_dependencies, a task's parents: `after=`, issue 24 point 2)
# 5: sitq_counts, the finished tasks counted by triggers (`sqlite.counting`, issue 23)

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS sitq_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sitq_tasks (
    seq              INTEGER PRIMARY KEY,      -- insertion order: FIFO among equals
    id               TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    payload          BLOB NOT NULL,            -- the serialized call
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    enqueued_at      REAL NOT NULL,
    due_at           REAL NOT NULL,            -- when the current/next attempt is due
    attempts         INTEGER NOT NULL DEFAULT 0,
    retry_base       INTEGER NOT NULL DEFAULT 0, -- attempts before the last requeue
    max_attempts     INTEGER,                  -- the retry budget, as data
    retry_policy     TEXT,                     -- e.g. "exponential, 5 attempts"
    lease_token      INTEGER NOT NULL DEFAULT 0, -- fencing token, +1 on every claim
    lease_expires_at REAL,
    worker_id        TEXT,
    started_at       REAL,
    finished_at      REAL,
    result           BLOB,
    error            TEXT,
    error_type       TEXT,
    traceback        TEXT,
    progress         REAL,
    progress_message TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    lost_worker_id   TEXT,                     -- set by a claim that took over a dead lease
    lost_started_at  REAL,
    lost_scheduled_for REAL,
    last_delay       REAL,                     -- backoff chosen after the last failed attempt
    unique_key       TEXT                      -- with_options(unique_key=...), else NULL
);
-- The claim reads this index in its own order: no sort, however deep the backlog.
CREATE INDEX IF NOT EXISTS sitq_tasks_claim
    ON sitq_tasks (priority DESC, due_at) WHERE {IS_WAITING};
CREATE INDEX IF NOT EXISTS sitq_tasks_waiting
    ON sitq_tasks (due_at) WHERE {IS_WAITING};
CREATE INDEX IF NOT EXISTS sitq_tasks_leased
    ON sitq_tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS sitq_tasks_finished
    ON sitq_tasks (finished_at) WHERE {IS_PRUNABLE};
CREATE INDEX IF NOT EXISTS sitq_tasks_status ON sitq_tasks (status);
-- One unfinished task per unique key (`state.HOLDS_UNIQUE_KEY`): the database says no to
-- a second, whichever process inserts it. A finished task leaves the index: its key is free.
CREATE UNIQUE INDEX IF NOT EXISTS sitq_tasks_unique
    ON sitq_tasks (unique_key) WHERE unique_key IS NOT NULL AND {HOLDS_KEY};
-- The starts a rate limit counts (`sitq.policy.rate_limits`), by task name: recent ones,
-- and the slots booked for tasks sent back to wait (task_id: the task a booked slot is
-- for, NULL once a task started on it or for a start that needed no booking).
CREATE TABLE IF NOT EXISTS sitq_rate_starts (
    name       TEXT NOT NULL,
    started_at REAL NOT NULL,
    task_id    TEXT
);
CREATE INDEX IF NOT EXISTS sitq_rate_starts_name ON sitq_rate_starts (name, started_at);
CREATE INDEX IF NOT EXISTS sitq_rate_starts_task ON sitq_rate_starts (task_id);
CREATE TABLE IF NOT EXISTS sitq_attempts (
    seq           INTEGER PRIMARY KEY,
    task_id       TEXT NOT NULL,
    task_name     TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    worker_id     TEXT NOT NULL,
    scheduled_for REAL NOT NULL,
    started_at    REAL NOT NULL,
    finished_at   REAL NOT NULL,
    outcome       TEXT NOT NULL,
    error_type    TEXT,
    error_message TEXT,
    next_delay    REAL
);
CREATE INDEX IF NOT EXISTS sitq_attempts_task ON sitq_attempts (task_id);
-- A task's parents (`with_options(after=...)`): it waits blocked until all succeeded.
CREATE TABLE IF NOT EXISTS sitq_dependencies (
    child_id  TEXT NOT NULL,
    parent_id TEXT NOT NULL,
    place     INTEGER NOT NULL,                -- the parent's place in the child's list
    PRIMARY KEY (child_id, parent_id)
);
CREATE INDEX IF NOT EXISTS sitq_dependencies_parent ON sitq_dependencies (parent_id);
-- Periodic tasks: when each ticks, and the call each tick enqueues (sitq.engine.schedules).
CREATE TABLE IF NOT EXISTS sitq_schedules (
    name          TEXT PRIMARY KEY,
    task_name     TEXT NOT NULL,
    payload       BLOB NOT NULL,            -- the call, serialized for 'sitq-schedule:<name>'
    every         REAL,                     -- seconds between ticks, or NULL for cron
    cron          TEXT,                     -- five fields, read in tz
    tz            TEXT NOT NULL,
    missed        TEXT NOT NULL,            -- 'last' or 'skip' (sitq.policy.schedule)
    priority      INTEGER NOT NULL DEFAULT 0,
    max_attempts  INTEGER,
    retry_policy  TEXT,
    next_at       REAL NOT NULL,            -- the next tick to enqueue
    created_at    REAL NOT NULL,
    last_tick_at  REAL,
    last_task_id  TEXT,
    last_error    TEXT
);
-- One row per tick enqueued: the key makes a second enqueue of a tick impossible.
CREATE TABLE IF NOT EXISTS sitq_schedule_ticks (
    schedule      TEXT NOT NULL,
    tick_at       REAL NOT NULL,
    task_id       TEXT NOT NULL,
    enqueued_at   REAL NOT NULL,
    PRIMARY KEY (schedule, tick_at)
);
"""

#: Columns added since schema version 1, with their types: an older file gains them.
NEW_COLUMNS = {"last_delay": "REAL", "max_attempts": "INTEGER", "retry_policy": "TEXT",
               "unique_key": "TEXT"}  # fmt: skip

INSERT_TASK = """
INSERT INTO sitq_tasks (id, name, payload, status, due_at, enqueued_at, priority,
                        max_attempts, retry_policy)  -- the order of NewTask's fields
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
FULL_COLUMNS = 9  # NewTask's fields INSERT_TASK writes (a unique key: `sqlite.limits`)

#: The same for a task at the default priority with no retry budget of its own.
INSERT_PLAIN_TASK = """
INSERT INTO sitq_tasks (id, name, payload, status, due_at, enqueued_at)
VALUES (?, ?, ?, ?, ?, ?)
"""

#: What a claim hands back, for `ClaimedTask`.
CLAIM_RETURNING = """
RETURNING id, name, payload, attempts, attempts - retry_base, lease_token, due_at,
          enqueued_at, lost_worker_id, lost_started_at, lost_scheduled_for, last_delay,
          cancel_requested, max_attempts
"""

#: What every claim writes besides the attempt count and start (which differ between its
#: two statements): a new lease and fencing token, owned by this worker, with the worker's
#: default retry budget where the task brought none. A row claimed ahead then gets
#: `started_at = NULL` (MARK_AHEAD): "in a worker's hand, not started", until MARK_STARTED
#: or its settlement says when it started.
LEASE_SET = """
    lease_token = lease_token + 1,
    lease_expires_at = :lease_until,
    worker_id = :worker_id,
    max_attempts = COALESCE(max_attempts, :default_max),
    retry_policy = COALESCE(retry_policy, :default_policy),
    progress = NULL,
    progress_message = NULL"""

#: Did the lost attempt spend the retry budget (`state.LOST_WHEN_SPENT`)? 1 or 0; a task
#: with no budget known (none of its own, and no default from the claiming worker) is 0.
BUDGET_SPENT = "COALESCE(attempts - retry_base >= COALESCE(max_attempts, :default_max), 0)"

#: What a lost lease with a spent budget ends as (`state.LOST_WHEN_SPENT`, `..._CANCELLED`):
#: status, error type and error, as SQL on the row's old values.
LOST_END = f"""
    status = CASE WHEN cancel_requested THEN '{LOST_WHEN_SPENT_CANCELLED[0].value}'
                  ELSE '{LOST_WHEN_SPENT[0].value}' END,
    error_type = CASE WHEN cancel_requested THEN '{LOST_WHEN_SPENT_CANCELLED[1]}'
                      ELSE '{LOST_WHEN_SPENT[1]}' END,
    error = CASE WHEN cancel_requested THEN '{LOST_CANCEL_MESSAGE}'
                 ELSE 'worker ' || worker_id || ' stopped renewing its lease' END,
    traceback = NULL,
    worker_id = :worker_id,  -- who decided, as when a worker settles it
    started_at = :now,
    finished_at = :now,
    lease_expires_at = NULL"""

# An expired lease whose lost attempt was the budget's last (a row held ahead and never
# started lost nothing, so it is never spent): decided here, in the claim's own transaction
# (`state.LOST_WHEN_SPENT`), with no attempt added and the fencing token kept, so no reader
# ever sees more attempts than the budget, even if the claiming worker dies at once. The
# lost attempt's worker and times are kept for its history record.
END_SPENT = f"""
UPDATE sitq_tasks SET
    lost_worker_id = worker_id,
    lost_started_at = started_at,
    lost_scheduled_for = due_at,
    due_at = lease_expires_at,{LOST_END}
WHERE seq IN (
    SELECT seq FROM sitq_tasks INDEXED BY sitq_tasks_leased
     WHERE status = 'running' AND lease_expires_at < :expired_before
       AND started_at IS NOT NULL AND {BUDGET_SPENT}
       AND id NOT IN (SELECT value FROM json_each(:held))
     ORDER BY lease_expires_at LIMIT :limit
)
{CLAIM_RETURNING.rstrip()}, status
"""

# Take over tasks whose worker stopped renewing its lease (it died or stalled). The SET
# expressions see the old row, so the lost attempt's worker and times are kept for the
# history. A pending cancel request is kept too: it must survive the crash. A row the dead
# worker held ahead and never started (started_at NULL) lost nothing: no lost attempt, its
# attempt handed to the new claim, its due time kept (`sitq.policy.state`, "never started").
TAKE_OVER = f"""
UPDATE sitq_tasks SET
    lost_worker_id = CASE WHEN started_at IS NULL THEN NULL ELSE worker_id END,
    lost_started_at = started_at,
    lost_scheduled_for = CASE WHEN started_at IS NULL THEN NULL ELSE due_at END,
    due_at = CASE WHEN started_at IS NULL THEN due_at ELSE lease_expires_at END,
    attempts = attempts + (started_at IS NOT NULL),
    started_at = :now,{LEASE_SET}
WHERE seq IN (
    SELECT seq FROM sitq_tasks INDEXED BY sitq_tasks_leased
     WHERE status = 'running' AND lease_expires_at < :expired_before
       AND NOT (started_at IS NOT NULL AND {BUDGET_SPENT})
       AND id NOT IN (SELECT value FROM json_each(:held))
     ORDER BY lease_expires_at LIMIT :limit
)
{CLAIM_RETURNING}
"""

# Is any lease expired? One step down the index: most claims find none and skip TAKE_OVER.
# (:expired_before is :now less a step of the clock just seen, see `ops.read_clock`.)
ANY_LEASE_EXPIRED = """
SELECT 1 FROM sitq_tasks INDEXED BY sitq_tasks_leased
 WHERE status = 'running' AND lease_expires_at < :expired_before LIMIT 1
"""

# Lease due tasks, highest priority first, then oldest due, then FIFO. INDEXED BY makes
# SQLite walk sitq_tasks_claim in order and stop after :limit rows. RETURNING gives rows in
# no set order, so each row ends with its priority and seq: the caller sorts by them.
CLAIM_DUE = f"""
UPDATE sitq_tasks SET
    status = 'running',
    lost_worker_id = NULL,
    lost_started_at = NULL,
    lost_scheduled_for = NULL,
    attempts = attempts + 1,
    started_at = :now,{LEASE_SET}
WHERE seq IN (
    SELECT seq FROM sitq_tasks INDEXED BY sitq_tasks_claim
     WHERE {IS_WAITING} AND due_at <= :now
     ORDER BY priority DESC, due_at, seq LIMIT :limit
)
{CLAIM_RETURNING.rstrip()}, priority, seq
"""

# The rows of a claim that wait in the worker's hand: not started yet (:ids, a JSON list).
MARK_AHEAD = """
UPDATE sitq_tasks SET started_at = NULL WHERE id IN (SELECT value FROM json_each(:ids))
"""

# A task claimed ahead has started: from now on a lost lease costs it an attempt.
MARK_STARTED = """
UPDATE sitq_tasks SET started_at = :started_at
WHERE id = :task_id AND lease_token = :token AND status = 'running' AND started_at IS NULL
"""

# Store a decided outcome. The fencing check is in the WHERE: a stale token changes nothing.
# A task claimed ahead whose start was not recorded yet gets its attempt's start time.
SETTLE_SET = """
UPDATE sitq_tasks SET
    status = :status,
    started_at = COALESCE(started_at, :started_at),
    due_at = COALESCE(:due_at, due_at),
    attempts = attempts - :refund,
    finished_at = :finished_at,
    result = COALESCE(:result, result),
    error = CASE WHEN :keep_error THEN error ELSE :error END,
    error_type = CASE WHEN :keep_error THEN error_type ELSE :error_type END,
    traceback = CASE WHEN :keep_error THEN traceback ELSE :traceback END,
    last_delay = CASE WHEN :keep_last_delay THEN last_delay ELSE :next_delay END,
    lease_expires_at = NULL"""
SETTLE = f"""{SETTLE_SET}
WHERE id = :task_id AND lease_token = :token AND status = 'running'
"""

# The late outcome of an attempt a takeover declared lost (`state.LATE_OUTCOME_REPLACES`):
# it replaces the WorkerLost dead letter if this worker held that attempt, with its token
# or the one the takeover took (+1). :worker_id is NULL for a settlement that brings no
# attempt record (a hand-back, a deferral): only a completed body's outcome qualifies.
# Not if it would make the task hold its unique key (:holds_key) while another task holds
# it: it stays the dead letter it is, as a requeue would.
SETTLE_LATE = f"""{SETTLE_SET}
WHERE id = :task_id AND status = '{LATE_OUTCOME_REPLACES[0].value}'
  AND error_type = '{LATE_OUTCOME_REPLACES[1]}' AND lost_worker_id = :worker_id
  AND lease_token - :token IN (0, 1)
  AND NOT (:holds_key AND unique_key IS NOT NULL AND EXISTS (
      SELECT 1 FROM sitq_tasks AS holder WHERE holder.unique_key = sitq_tasks.unique_key
         AND holder.id <> sitq_tasks.id AND {HOLDS_KEY}))
"""

#: The lost-attempt record a late outcome replaces (task id, attempt number).
#: Whether a task has children (`after=`): only then does its end decide anything more.
ANY_CHILD = "SELECT 1 FROM sitq_dependencies WHERE parent_id = ? LIMIT 1"

FORGET_LOST_ATTEMPT = """
DELETE FROM sitq_attempts WHERE task_id = ? AND attempt = ? AND outcome = 'worker_lost'
"""

#: A wait for the write lock at least this long is an outage that leases make up for
#: (`sqlite_lock.make_up_for_outage`); shorter waits are the ordinary turns of a busy file.
OUTAGE_AT_LEAST = 0.1

#: After a wait of ? seconds for the write lock (an outage): every running lease gets the
#: time back (`sqlite_lock.make_up_for_outage`).
MAKE_UP_FOR_OUTAGE = """
UPDATE sitq_tasks SET lease_expires_at = lease_expires_at + ? WHERE status = 'running'
"""

RENEW = """
UPDATE sitq_tasks SET lease_expires_at = ?
WHERE id = ? AND lease_token = ? AND status = 'running' AND cancel_requested = 0
"""

INSERT_ATTEMPT = """
INSERT INTO sitq_attempts (task_id, task_name, attempt, worker_id, scheduled_for, started_at,
                           finished_at, outcome, error_type, error_message, next_delay)
VALUES (:task_id, :task_name, :attempt, :worker_id, :scheduled_for, :started_at,
        :finished_at, :outcome, :error_type, :error_message, :next_delay)
"""

CANCEL_NOW = """
UPDATE sitq_tasks SET status = 'cancelled', finished_at = ?,
       error = 'cancelled before it ran', error_type = 'Cancelled'
WHERE id = ?
"""

#: A task's status and unique key (requeue asks, then `state.on_requeue` decides).
STATUS_AND_KEY = "SELECT status, unique_key FROM sitq_tasks WHERE id = ?"

#: The unfinished task holding unique key ? (other than task ?), if any.
KEY_HOLDER = f"""
SELECT id FROM sitq_tasks WHERE unique_key = ? AND id <> ? AND unique_key IS NOT NULL
   AND {HOLDS_KEY}
"""

REQUEST_CANCEL = "UPDATE sitq_tasks SET cancel_requested = 1 WHERE id = ?"

REQUEUE = """
UPDATE sitq_tasks SET status = ?, due_at = ?, retry_base = attempts, finished_at = NULL,
       result = NULL, error = NULL, error_type = NULL, traceback = NULL,
       cancel_requested = 0, last_delay = NULL
WHERE id = ?
"""

PRUNE_IDS = f"""
SELECT id FROM sitq_tasks INDEXED BY sitq_tasks_finished
 WHERE {IS_PRUNABLE} AND finished_at < ? LIMIT ?
"""

NEXT_DUE = f"SELECT MIN(due_at) FROM sitq_tasks WHERE {IS_WAITING}"


#: The live view's read (`Backend.newest_attempts`): the rowid backwards, no sort.
NEWEST_ATTEMPTS = f"SELECT {ATTEMPT_COLUMNS} FROM sitq_attempts ORDER BY seq DESC LIMIT ?"
