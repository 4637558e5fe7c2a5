"""The PostgreSQL schema and statements, as plain SQL a student can read and run by hand.

Same tables, columns and meanings as `sitq.backends.sqlite.sql`; only the dialect differs.
Every statement names its tables without a schema: the backend sets each connection's
`search_path` to sitq's own schema (default "sitq"), so several queues can share one
database. To try a statement in psql: `SET search_path = sitq;` first.

No rule about *which* state comes next lives here (that is `sitq.policy.state`). Three habits
make these statements safe with many workers on many machines:

- `FOR UPDATE SKIP LOCKED`: a claim never waits for, nor takes, a row another claim holds;
- the fencing token is checked in the UPDATE itself (`lease_token = ...`);
- a batch (of tasks, settlements, leases) is passed as arrays and `unnest`ed, so one
  statement, one round trip and one transaction handle it, however many rows.
"""

from __future__ import annotations

from sitq.backends.postgres.schedules import SCHEDULE_TABLES
from sitq.policy.state import (
    CLAIMABLE,
    HOLDS_UNIQUE_KEY,
    LATE_OUTCOME_REPLACES,
    LOST_CANCEL_MESSAGE,
    LOST_WHEN_SPENT,
    LOST_WHEN_SPENT_CANCELLED,
    PRUNABLE,
)
from sitq.task import TaskStatus


def _in(statuses: frozenset[TaskStatus]) -> str:
    """`'a', 'b'` for an IN list; sorted so the text never varies."""
    return ", ".join(f"'{s.value}'" for s in sorted(statuses))


WAITING_SQL = _in(CLAIMABLE)
PRUNABLE_SQL = _in(PRUNABLE)
HOLDS_KEY_SQL = _in(HOLDS_UNIQUE_KEY)


def lease_clock(param: str) -> str:
    """What leases and retention are measured on: the time in `param` when the worker sent
    one (a FakeClock's virtual time), else (NULL) the server's own clock, in epoch seconds.
    Workers on machines whose clocks disagree thus agree on when a lease ends."""
    return f"COALESCE({param}::float8, extract(epoch FROM statement_timestamp())::float8)"


#: The version of this schema; stored in sitq_meta, a newer one is refused. 2: unique keys,
#: rate limits, periodic tasks and dependencies (their parts: limits, schedules and deps)
SCHEMA_VERSION = 2

#: Taken (for the transaction) while creating or upgrading the schema, so that workers
#: starting at the same moment never race on CREATE: the key is `hashtext` of this + schema.
SETUP_LOCK_KEY = "sitq schema set-up: "

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS sitq_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sitq_tasks (
    seq              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- FIFO among equals
    id               TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    payload          BYTEA NOT NULL,           -- the serialized call
    status           TEXT NOT NULL,
    priority         BIGINT NOT NULL DEFAULT 0,
    enqueued_at      DOUBLE PRECISION NOT NULL, -- epoch seconds on the queue's clock
    due_at           DOUBLE PRECISION NOT NULL, -- when the current/next attempt is due
    attempts         INTEGER NOT NULL DEFAULT 0,
    retry_base       INTEGER NOT NULL DEFAULT 0, -- attempts before the last requeue
    max_attempts     INTEGER,                  -- the retry budget, as data
    retry_policy     TEXT,                     -- e.g. 'exponential, 5 attempts'
    lease_token      BIGINT NOT NULL DEFAULT 0, -- fencing token, +1 on every claim
    lease_expires_at DOUBLE PRECISION,
    worker_id        TEXT,
    started_at       DOUBLE PRECISION,
    finished_at      DOUBLE PRECISION,
    result           BYTEA,
    error            TEXT,
    error_type       TEXT,
    traceback        TEXT,
    progress         DOUBLE PRECISION,
    progress_message TEXT,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    lost_worker_id   TEXT,                     -- set by a claim that took over a dead lease
    lost_started_at  DOUBLE PRECISION,
    lost_scheduled_for DOUBLE PRECISION,
    last_delay       DOUBLE PRECISION,         -- backoff chosen after the last failed attempt
    unique_key       TEXT                      -- with_options(unique_key=...), else NULL
);
-- The claim reads this index in its own order: no sort, however deep the backlog.
CREATE INDEX IF NOT EXISTS sitq_tasks_claim
    ON sitq_tasks (priority DESC, due_at, seq) WHERE status IN ({WAITING_SQL});
CREATE INDEX IF NOT EXISTS sitq_tasks_waiting
    ON sitq_tasks (due_at) WHERE status IN ({WAITING_SQL});
CREATE INDEX IF NOT EXISTS sitq_tasks_leased
    ON sitq_tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS sitq_tasks_finished
    ON sitq_tasks (finished_at) WHERE status IN ({PRUNABLE_SQL});
CREATE INDEX IF NOT EXISTS sitq_tasks_status ON sitq_tasks (status);
CREATE TABLE IF NOT EXISTS sitq_attempts (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    task_id       TEXT NOT NULL,
    task_name     TEXT NOT NULL,
    attempt       INTEGER NOT NULL,
    worker_id     TEXT NOT NULL,
    scheduled_for DOUBLE PRECISION NOT NULL,
    started_at    DOUBLE PRECISION NOT NULL,
    finished_at   DOUBLE PRECISION NOT NULL,
    outcome       TEXT NOT NULL,
    error_type    TEXT,
    error_message TEXT,
    next_delay    DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS sitq_attempts_task ON sitq_attempts (task_id);
"""
SCHEMA += SCHEDULE_TABLES  # periodic tasks: sitq.backends.postgres.schedules

READ_VERSION = "SELECT value FROM sitq_meta WHERE key = 'schema_version'"
WRITE_VERSION = """
INSERT INTO sitq_meta (key, value) VALUES ('schema_version', $1)
ON CONFLICT (key) DO UPDATE SET value = excluded.value
"""

# Insert a whole batch in one statement, and in the same transaction tell the workers
# that LISTEN on $10 (the work channel) that there is something new to look at.
ADD_TASKS = """
WITH added AS (
    INSERT INTO sitq_tasks (id, name, payload, status, priority, enqueued_at, due_at,
                            max_attempts, retry_policy)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::bigint[],
                         $6::float8[], $7::float8[], $8::int[], $9::text[])
    RETURNING 1
)
SELECT pg_notify($10, $11) FROM (SELECT count(*) FROM added) AS done
"""

#: Which task ids exist: after a connection lost during COMMIT, tells whether it happened.
EXISTING_IDS = "SELECT id FROM sitq_tasks WHERE id = ANY($1::text[])"

#: What a claim hands back, for `ClaimedTask` (then the two columns that order the batch,
#: and whether the row is claimed ahead: in the worker's hand, not started).
CLAIM_RETURNING = """
    RETURNING t.id, t.name, t.payload, t.attempts, t.attempts - t.retry_base AS try_number,
              t.lease_token, t.due_at, t.enqueued_at, t.lost_worker_id, t.lost_started_at,
              t.lost_scheduled_for, t.last_delay, t.cancel_requested, t.max_attempts,
              t.priority, t.seq, t.started_at IS NULL AS ahead
"""

#: What both halves of a claim write besides the attempt count and start: a new lease and
#: fencing token, owned by this worker ($1, for $3 seconds on the lease clock $8), with the
#: default budget ($6, $7) where the task brought none. The SET expressions see the old row
#: (SQL's rule), as in SQLite. A row's place in the claim decides its start: the first $9
#: start at once (`started_at` = $2); the others wait in the worker's hand, not started
#: (NULL) until the worker says so (`marked`, in a later claim) or their settlement does.
LEASE_SET = f"""
        lease_token = lease_token + 1,
        lease_expires_at = {lease_clock("$8")} + $3,
        worker_id = $1,
        max_attempts = COALESCE(max_attempts, $6),
        retry_policy = COALESCE(retry_policy, $7),
        progress = NULL,
        progress_message = NULL"""

#: What a spent lost lease ends as (`state.LOST_WHEN_SPENT`, `..._CANCELLED`), at $2.
LOST_END = f"""
        status = CASE WHEN cancel_requested THEN '{LOST_WHEN_SPENT_CANCELLED[0].value}'
                      ELSE '{LOST_WHEN_SPENT[0].value}' END,
        error_type = CASE WHEN cancel_requested THEN '{LOST_WHEN_SPENT_CANCELLED[1]}'
                          ELSE '{LOST_WHEN_SPENT[1]}' END,
        error = CASE WHEN cancel_requested THEN '{LOST_CANCEL_MESSAGE}'
                     ELSE 'worker ' || worker_id || ' stopped renewing its lease' END,
        traceback = NULL, worker_id = $1, started_at = $2, finished_at = $2,
        lease_expires_at = NULL"""

# The whole claim is this one statement (one transaction, one round trip):
# 0. `marked`: tasks this worker claimed ahead and has started since ($10 ids, $11 tokens,
#    $12 times): from now on a lost lease costs them an attempt.
# 1. `expired`: leases whose worker stopped renewing (died or stalled), but not this
#    worker's own ($5); `spent` if the lost attempt was the budget's last (a row held ahead
#    and never started lost nothing, so it is never spent).
# 2. `ended`: a spent one is decided here (`state.LOST_WHEN_SPENT`): no attempt added, the
#    token kept, so no reader sees more attempts than the budget, even if we die now. One
#    with children is only signalled (`parent`): `postgres.deps` ends it and its children.
# 3. `taken`: the others are taken over. The SET expressions see the old row, so the lost
#    attempt's worker and times are kept for the history, and a cancel request too. A row
#    the dead worker held ahead and never started lost nothing: no lost attempt, its
#    attempt goes to the new claim, its due time is kept (`sitq.policy.state`, "never started").
# 4. `lost`: append each lost attempt to the history.
# 5. `due`/`claimed`: lease due tasks with what is left of the limit, by priority, due
#    time, FIFO. SKIP LOCKED: rows another claim holds are simply someone else's.
# $1 worker id, $2 now (the worker's: started_at, what is due), $3 lease seconds, $4 limit,
# $5 held ids, $6/$7 default budget, $8 the lease clock (NULL: the server's, `lease_clock`),
# $9 how many start at once, $10-$12 the starts to record.
# Each row ends with `ahead` (claimed ahead, not started) and `decided` (the status `ended`
# gave it, else NULL).
CLAIM_STEPS = f"""
WITH marked AS (
    UPDATE sitq_tasks AS t SET started_at = m.started_at
      FROM unnest($10::text[], $11::bigint[], $12::float8[]) AS m(id, token, started_at)
     WHERE t.id = m.id AND t.lease_token = m.token AND t.status = 'running'
       AND t.started_at IS NULL
), expired AS (
    SELECT seq, lease_expires_at, has_children,
           started_at IS NOT NULL
           AND COALESCE(attempts - retry_base >= COALESCE(max_attempts, $6), FALSE) AS spent
      FROM sitq_tasks
     WHERE status = 'running' AND lease_expires_at < {lease_clock("$8")}
       AND id <> ALL($5::text[])
     ORDER BY lease_expires_at
     LIMIT $4
       FOR UPDATE SKIP LOCKED
), ended AS (
    UPDATE sitq_tasks AS t SET
        lost_worker_id = worker_id, lost_started_at = started_at, lost_scheduled_for = due_at,
        due_at = lease_expires_at,{LOST_END}
    WHERE seq IN (SELECT seq FROM expired WHERE spent AND NOT has_children)
    {CLAIM_RETURNING.rstrip()}, t.status AS decided
), taken AS (
    UPDATE sitq_tasks AS t SET
        lost_worker_id = CASE WHEN t.started_at IS NULL THEN NULL ELSE t.worker_id END,
        lost_started_at = t.started_at,
        lost_scheduled_for = CASE WHEN t.started_at IS NULL THEN NULL ELSE t.due_at END,
        due_at = CASE WHEN t.started_at IS NULL THEN t.due_at ELSE t.lease_expires_at END,
        attempts = t.attempts + CASE WHEN t.started_at IS NULL THEN 0 ELSE 1 END,
        started_at = CASE WHEN e.place > $9 THEN NULL ELSE $2::float8 END,{LEASE_SET}
      FROM (SELECT seq, row_number() OVER (ORDER BY lease_expires_at, seq) AS place
              FROM expired WHERE NOT spent) AS e
     WHERE t.seq = e.seq
    {CLAIM_RETURNING}
), lost AS (
    INSERT INTO sitq_attempts (task_id, task_name, attempt, worker_id, scheduled_for,
                               started_at, finished_at, outcome, error_type, error_message)
    SELECT id, name, number, lost_worker_id, lost_scheduled_for, lost_started_at,
           due_at, 'worker_lost', 'WorkerLost',
           'worker ' || lost_worker_id || ' stopped renewing its lease'
      FROM (SELECT id, name, attempts - 1 AS number, lost_worker_id, lost_scheduled_for,
                   lost_started_at, due_at, seq FROM taken WHERE lost_worker_id IS NOT NULL
            UNION ALL
            SELECT id, name, attempts, lost_worker_id, lost_scheduled_for, lost_started_at,
                   due_at, seq FROM ended) AS lost_rows
     ORDER BY due_at, seq
), due AS (
    SELECT seq, priority, due_at FROM sitq_tasks
     WHERE status IN ({WAITING_SQL}) AND due_at <= $2
     ORDER BY priority DESC, due_at, seq
     LIMIT greatest($4 - (SELECT count(*) FROM expired), 0)
       FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE sitq_tasks AS t SET
        status = 'running',
        lost_worker_id = NULL,
        lost_started_at = NULL,
        lost_scheduled_for = NULL,
        attempts = t.attempts + 1,
        started_at = CASE WHEN d.place > $9 THEN NULL ELSE $2::float8 END,{LEASE_SET}
      FROM (SELECT seq, (SELECT count(*) FROM expired WHERE NOT spent)
                        + row_number() OVER (ORDER BY priority DESC, due_at, seq) AS place
              FROM due) AS d
     WHERE t.seq = d.seq
    {CLAIM_RETURNING}
), parent AS (  -- spent, with children: left to `postgres.deps` (a sign, 2), its slot kept
    {CLAIM_RETURNING.strip().replace("RETURNING", "SELECT", 1)}
      FROM sitq_tasks AS t JOIN expired AS e ON e.seq = t.seq WHERE e.spent AND e.has_children
), batch AS (
    SELECT 0 AS taken_first, *, NULL::text AS decided FROM taken
    UNION ALL
    SELECT 0, * FROM ended
    UNION ALL
    SELECT 1, *, NULL FROM claimed
    UNION ALL
    SELECT 2, *, NULL FROM parent
)"""


def claim_rows(limit: str, more: str = "") -> str:
    """A claim's rows in order, each with `next_due` (if it came back short of `limit`: the
    earliest due time of the waiting tasks it left, which a worker asks next), then `more`
    columns. When it claimed nothing, one row of NULLs but those."""
    return f"""
SELECT batch.*, CASE WHEN (SELECT count(*) FROM batch) < {limit} THEN (
           SELECT min(due_at) FROM sitq_tasks
            WHERE status IN ({WAITING_SQL}) AND seq NOT IN (SELECT seq FROM due)
       ) END AS next_due{more}
  FROM (SELECT 1) AS one LEFT JOIN batch ON TRUE
 ORDER BY batch.taken_first, batch.priority DESC, batch.due_at, batch.seq
"""


CLAIM = CLAIM_STEPS + claim_rows("$4")

# Store a batch of decided outcomes in one statement. `s` is the batch, one row per
# settlement ($1..$13), with its history record ($14..$23; NULL outcome: none). The
# fencing check is in the UPDATE's WHERE: a stale token changes nothing, and only the
# settlements it accepted get their record appended. Returns the accepted positions.
# `late`: a completed attempt's outcome ($16: its worker) replaces the WorkerLost dead
# letter a takeover made of it, and its record the lost one (`state.LATE_OUTCOME_REPLACES`),
# unless that would make it a second holder of its unique key. $24: only tasks with children
# (TRUE; `postgres.deps` settles them again, following them down), or only the others.
SETTLE = f"""
WITH s AS (
    SELECT * FROM unnest(
        $1::text[], $2::bigint[], $3::text[], $4::float8[], $5::int[], $6::float8[],
        $7::bytea[], $8::bool[], $9::text[], $10::text[], $11::text[], $12::bool[],
        $13::float8[], $14::text[], $15::int[], $16::text[], $17::float8[], $18::float8[],
        $19::float8[], $20::text[], $21::text[], $22::text[], $23::float8[]
    ) WITH ORDINALITY AS s(task_id, token, status, due_at, refund, finished_at, result,
                           keep_error, error, error_type, traceback, keep_last_delay,
                           next_delay, a_task_name, a_attempt, a_worker_id,
                           a_scheduled_for, a_started_at, a_finished_at, a_outcome,
                           a_error_type, a_error_message, a_next_delay, ord)
), late AS (
    SELECT t.id FROM sitq_tasks AS t JOIN s ON t.id = s.task_id
     WHERE t.status = '{LATE_OUTCOME_REPLACES[0].value}'
       AND t.error_type = '{LATE_OUTCOME_REPLACES[1]}'
       AND t.lost_worker_id = s.a_worker_id AND t.lease_token - s.token IN (0, 1)
       AND NOT (s.status IN ({HOLDS_KEY_SQL}) AND EXISTS (  -- its key taken meanwhile
           SELECT 1 FROM sitq_tasks AS h WHERE h.unique_key = t.unique_key AND h.id <> t.id
              AND h.status IN ({HOLDS_KEY_SQL})))
), settled AS (
    UPDATE sitq_tasks AS t SET
        status = s.status,
        started_at = COALESCE(t.started_at, s.a_started_at),  -- a start not recorded yet
        due_at = COALESCE(s.due_at, t.due_at),
        attempts = t.attempts - s.refund,
        finished_at = s.finished_at,
        result = COALESCE(s.result, t.result),
        error = CASE WHEN s.keep_error THEN t.error ELSE s.error END,
        error_type = CASE WHEN s.keep_error THEN t.error_type ELSE s.error_type END,
        traceback = CASE WHEN s.keep_error THEN t.traceback ELSE s.traceback END,
        last_delay = CASE WHEN s.keep_last_delay THEN t.last_delay ELSE s.next_delay END,
        lease_expires_at = NULL
      FROM s
     WHERE t.id = s.task_id AND t.has_children = $24::bool
       AND ((t.lease_token = s.token AND t.status = 'running') OR t.id IN (SELECT id FROM late))
    RETURNING s.*
), superseded AS (
    DELETE FROM sitq_attempts AS a USING settled
     WHERE a.task_id = settled.task_id AND a.attempt = settled.a_attempt
       AND a.outcome = 'worker_lost' AND settled.task_id IN (SELECT id FROM late)
), recorded AS (
    INSERT INTO sitq_attempts (task_id, task_name, attempt, worker_id, scheduled_for,
                               started_at, finished_at, outcome, error_type, error_message,
                               next_delay)
    SELECT task_id, a_task_name, a_attempt, a_worker_id, a_scheduled_for, a_started_at,
           a_finished_at, a_outcome, a_error_type, a_error_message, a_next_delay
      FROM settled WHERE a_outcome IS NOT NULL ORDER BY ord
)
SELECT ord FROM settled
"""

#: Tasks no longer running, with their token: after a connection lost during COMMIT, a
#: settlement whose token is still there was stored (only its owner can settle a token).
SETTLED_WITH = """
SELECT id, lease_token FROM sitq_tasks WHERE id = ANY($1::text[]) AND status <> 'running'
"""

NOTIFY = "SELECT pg_notify($1, $2)"

#: Lock the leased rows first, so `now` is read once they are ours ($1 ids).
LOCK_LEASES = "SELECT id FROM sitq_tasks WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE"

# Extend leases still held with the same token and not asked to stop, by $1 seconds on the
# lease clock $4 (NULL: the server's; this statement starts once LOCK_LEASES has the rows).
# Returns the renewed.
RENEW = f"""
UPDATE sitq_tasks AS t SET lease_expires_at = {lease_clock("$4")} + $1
  FROM unnest($2::text[], $3::bigint[]) AS l(id, token)
 WHERE t.id = l.id AND t.lease_token = l.token AND t.status = 'running'
   AND NOT t.cancel_requested
RETURNING t.id
"""

SET_PROGRESS = """
UPDATE sitq_tasks SET progress = $1, progress_message = $2
WHERE id = $3 AND lease_token = $4 AND status = 'running'
"""

STATUS_FOR_UPDATE = "SELECT status FROM sitq_tasks WHERE id = $1 FOR UPDATE"

CANCEL_NOW = """
UPDATE sitq_tasks SET status = 'cancelled', finished_at = $1,
       error = 'cancelled before it ran', error_type = 'Cancelled'
WHERE id = $2
"""

REQUEST_CANCEL = "UPDATE sitq_tasks SET cancel_requested = TRUE WHERE id = $1"

REQUEUE = """
UPDATE sitq_tasks SET status = $1, due_at = $2, retry_base = attempts, finished_at = NULL,
       result = NULL, error = NULL, error_type = NULL, traceback = NULL,
       cancel_requested = FALSE, last_delay = NULL
WHERE id = $3
"""

PURGE = "DELETE FROM sitq_tasks WHERE status = ANY($1::text[])"

# Delete up to $2 tasks finished more than $1 seconds before the lease clock $3 (NULL: the
# server's), and their history, in one statement; returns how many.
PRUNE = f"""
WITH doomed AS (
    SELECT id FROM sitq_tasks
     WHERE status IN ({PRUNABLE_SQL}) AND finished_at < {lease_clock("$3")} - $1
     LIMIT $2
       FOR UPDATE SKIP LOCKED
), history AS (
    DELETE FROM sitq_attempts WHERE task_id IN (SELECT id FROM doomed)
), parents AS (
    DELETE FROM sitq_dependencies WHERE child_id IN (SELECT id FROM doomed)
), gone AS (
    DELETE FROM sitq_tasks WHERE id IN (SELECT id FROM doomed) RETURNING 1
)
SELECT count(*) FROM gone
"""

NEXT_DUE = f"SELECT MIN(due_at) FROM sitq_tasks WHERE status IN ({WAITING_SQL})"

COUNTS = "SELECT status, COUNT(*) FROM sitq_tasks GROUP BY status"
