"""The SQLite backend's operations: each one runs whole in the connection's thread.

The backend hands one of these functions, with its arguments, to its connection's thread
(`sitq.backends.sqlite.thread`), which calls it with the raw `sqlite3` connection. A
function opens its transaction, runs every statement it needs and commits (or rolls back)
before it returns: one round trip from the event loop, and nothing left open if the caller
is cancelled meanwhile. Inside a group of writes (`thread.run_together`) it joins the
group's transaction instead. What an operation returns is what its caller wants: rows are
turned into sitq's records here, in the thread.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Collection, Sequence
from itertools import chain
from typing import Any, TypeVar

from sitq.backends.base import ClaimedTask, NewTask, Now, Settlement, read_now
from sitq.backends.columns import TASK_COLUMNS
from sitq.backends.sqlite import deps, lock, sql
from sitq.clock import wall_clock_of
from sitq.errors import UniqueKeyTakenError
from sitq.policy.state import HOLDS_UNIQUE_KEY, CancelAction, on_cancel, on_requeue
from sitq.task import TERMINAL, Attempt, TaskInfo, TaskStatus

T = TypeVar("T")
MAX_VARIABLES = 900  # stay well under SQLite's limit on ? placeholders per statement
#: Rows per multi-row INSERT. Measured on sitq's schema (10,000 rows, plain sqlite3): 150
#: rows a statement 2.7 us a row, 500 rows 2.3, 1,500 2.3-2.5, 5,000 2.4-2.8.
ROWS_PER_INSERT = 500
PLAIN_COLUMNS = 6  # NewTask's first fields: what INSERT_PLAIN_TASK writes
FULL_COLUMNS = sql.FULL_COLUMNS  # ... and INSERT_TASK (a unique key: `sqlite.limits`)
DUE_AT = 6  # where a claim's row (CLAIM_RETURNING) has the task's due time
LOST_WORKER = 8  # ... and the worker that lost it (None: not taken over, or never started)


def take_the_lock(conn: sqlite3.Connection, statement: str, params: Any = ()) -> sqlite3.Cursor:
    """Run an operation's first write, which takes SQLite's write lock: BEGIN IMMEDIATE,
    or one autocommit statement. Another connection holding the lock: wait for it
    (`sitq.backends.sqlite.lock`). An outage waited through and not yet made up for (an
    earlier wait gave up): make up for it now that the lock is ours."""
    try:
        cursor = conn.execute(statement, params)
    except sqlite3.OperationalError as exc:
        return lock.wait_for_lock(conn, statement, params, exc)
    if lock.waiting.since is not None:
        lock.make_up_for_outage(conn)
    return cursor


def begin(conn: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE: take the write lock up front, so two processes never deadlock
    upgrading a read."""
    take_the_lock(conn, "BEGIN IMMEDIATE")


def in_transaction(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    """`begin`, run `work`, COMMIT; on any error ROLLBACK and re-raise. Inside a group's
    transaction (`thread.run_together`) the work simply joins it."""
    if conn.in_transaction:
        return work()
    begin(conn)
    try:
        result = work()
    except BaseException:
        if conn.in_transaction:  # SQLite ends it by itself on some errors (a full disk)
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def fetchall(conn: sqlite3.Connection, statement: str, params: Sequence[Any]) -> list[Any]:
    return conn.execute(statement, params).fetchall()


def write(conn: sqlite3.Connection, statement: str, params: Sequence[Any]) -> int:
    """One statement in autocommit: atomic by itself. Returns the rows it changed."""
    return take_the_lock(conn, statement, params).rowcount


def add_tasks(conn: sqlite3.Connection, rows: list[NewTask]) -> None:
    """Insert new tasks: one autocommit INSERT for one (atomic by itself), else one
    transaction. When every row has the default priority and no retry budget of its own
    (the common case), those three columns are left to their defaults: binding fewer
    values makes a big insert about a sixth faster."""
    statement, width = sql.INSERT_TASK, FULL_COLUMNS  # NewTask is in INSERT_TASK order
    if all(r.priority == 0 and r.max_attempts is None and r.retry_policy is None for r in rows):
        statement, width = sql.INSERT_PLAIN_TASK, PLAIN_COLUMNS
    if len(rows) == 1:
        take_the_lock(conn, statement, rows[0][:width])  # autocommit: atomic by itself
        return
    in_transaction(conn, lambda: insert_in_chunks(conn, statement, rows, width))


def insert_in_chunks(
    conn: sqlite3.Connection, insert: str, rows: Sequence[Sequence[Any]], width: int
) -> None:
    """Insert the first `width` values of each of `rows`, ROWS_PER_INSERT rows at a time,
    `INSERT ... VALUES (?, ?), (?, ?), ...`, or fewer if this SQLite allows fewer `?` per
    statement. executemany runs its statement once per row; started once per 500 rows, a
    big batch goes in about a third faster."""
    most = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width
    per_statement = max(1, min(ROWS_PER_INSERT, most))
    for start in range(0, len(rows), per_statement):
        chunk = rows[start : start + per_statement]
        values = list(chain.from_iterable(row[:width] for row in chunk))
        conn.execute(rows_of(insert, len(chunk)), values)


@functools.lru_cache(maxsize=16)
def rows_of(insert: str, count: int) -> str:
    """`insert` (an INSERT ... VALUES (?, ...) for one row) made to take `count` rows."""
    head, _, one_row = insert.rpartition("VALUES")
    return f"{head}VALUES {', '.join([one_row.strip()] * count)}"


def add_dependent_tasks(
    conn: sqlite3.Connection, tasks: list[NewTask], parents: list[tuple[str, ...]]
) -> None:
    """`deps.add_dependent_tasks` in one transaction: all the tasks, or none."""
    in_transaction(conn, lambda: deps.add_dependent_tasks(conn, tasks, parents))


def claim(conn: sqlite3.Connection, *claim_args: Any) -> list[ClaimedTask]:
    """`claim_in` in a transaction of its own (the arguments: `Backend.claim`'s)."""
    return in_transaction(conn, lambda: claim_in(conn, *claim_args))


def claim_in(
    conn: sqlite3.Connection, worker_id: str, limit: int, now: Now, lease: float,
    held: Collection[str], default_budget: tuple[int, str] | None, ahead: int,
    started: Sequence[tuple[str, int, float]],
) -> list[ClaimedTask]:  # fmt: skip
    """The claim's statements, inside a transaction that holds the write lock: record the
    starts of tasks claimed ahead (`started`: id, token, when), take over expired leases,
    lease due tasks. The rows past the first `limit - ahead` are claimed ahead: marked not
    started (MARK_AHEAD), so a worker that dies holding them costs them no attempt."""
    if started:
        conn.executemany(sql.MARK_STARTED, [
            {"task_id": task_id, "token": token, "started_at": at} for task_id, token, at in started
        ])  # fmt: skip
    if limit <= 0:
        return []
    moment, steady = read_clock(now, lease)  # after BEGIN IMMEDIATE: the lock is ours
    default_max, default_policy = default_budget or (None, None)
    values: dict[str, Any] = {
        "worker_id": worker_id, "held": json.dumps(held), "now": moment,
        "lease_until": moment + lease, "limit": limit, "expired_before": steady,
        "default_max": default_max, "default_policy": default_policy,
    }  # fmt: skip
    ended, taken = [], []
    if conn.execute(sql.ANY_LEASE_EXPIRED, values).fetchone() is not None:
        ended = conn.execute(sql.END_SPENT, values).fetchall()  # decided here, not leased
        values["limit"] = limit - len(ended)
        taken = conn.execute(sql.TAKE_OVER, values).fetchall() if values["limit"] > 0 else []
    for row in ended:
        conn.execute(sql.INSERT_ATTEMPT, lost_attempt_params(row, lost_number=row[3]))
    if ended:
        deps.follow(conn, [row[0] for row in ended], moment)  # their children, if any
    for row in taken:
        if row[LOST_WORKER] is not None:  # a row never started lost no attempt
            conn.execute(sql.INSERT_ATTEMPT, lost_attempt_params(row, lost_number=row[3] - 1))
    values["limit"] = limit - len(ended) - len(taken)
    due = claim_due(conn, values) if values["limit"] > 0 else []
    rows = taken + due
    at_once = limit - ahead
    if len(rows) > at_once:
        ids = json.dumps([row[0] for row in rows[at_once:]])
        conn.execute(sql.MARK_AHEAD, {"ids": ids})
    decided = [ClaimedTask.from_row(row[:-1], moment, decided=row[-1]) for row in ended]
    return decided + [
        ClaimedTask.from_row(row, moment, ahead=place >= at_once) for place, row in enumerate(rows)
    ]


def claim_due(conn: sqlite3.Connection, values: dict[str, Any]) -> list[Any]:
    """Lease the due tasks (up to values["limit"]) in one statement; return their rows in
    claim order (priority, due time, seq). The order matters: a worker starts a claim's
    tasks in list order and keeps the last ones in hand (`sitq.engine.claim_ahead`).

    (A claim of one or two rows was once split in two: select the due keys, then update
    each by key, which costs SQLite less. End to end it was slower: every statement is
    one more hand-over of the GIL between the connection's thread and the event loop.)"""
    rows = conn.execute(sql.CLAIM_DUE, values).fetchall()
    rows.sort(key=lambda row: (-row[-2], row[DUE_AT], row[-1]))  # -priority, due_at, seq
    return [row[:-2] for row in rows]


def settle_and_claim(
    conn: sqlite3.Connection, settlements: list[Settlement], *claim_args: Any
) -> tuple[list[bool], list[ClaimedTask]]:
    """A batch of outcomes, then the next claim (given its arguments: `claim_in`'s), in one
    transaction: one round trip."""

    def work() -> tuple[list[bool], list[ClaimedTask]]:
        accepted = [settle_one(conn, s) for s in settlements]
        return accepted, claim_in(conn, *claim_args) if claim_args else []

    return in_transaction(conn, work)


def settle_one(conn: sqlite3.Connection, s: Settlement) -> bool:
    """One UPDATE, fenced by the token, and its history record if it was accepted. A
    refused outcome of a completed attempt may still replace the WorkerLost dead letter a
    takeover made of it (`sql.SETTLE_LATE`, `state.LATE_OUTCOME_REPLACES`)."""
    params = settle_params(s)
    accepted: bool = conn.execute(sql.SETTLE, params).rowcount == 1
    if not accepted and s.attempt is not None:
        accepted = conn.execute(sql.SETTLE_LATE, params).rowcount == 1
        if accepted:
            conn.execute(sql.FORGET_LOST_ATTEMPT, (s.task_id, s.attempt.attempt))
    if accepted and s.attempt is not None:
        conn.execute(sql.INSERT_ATTEMPT, attempt_params(s.attempt))
    if accepted and s.status in TERMINAL and conn.execute(sql.ANY_CHILD, (s.task_id,)).fetchone():
        deps.follow(conn, [s.task_id], s.now)  # it has children: decide them again
    return accepted


def renew(
    conn: sqlite3.Connection, leases: list[tuple[str, int]], now: Now, lease: float
) -> set[str]:
    def work() -> set[str]:
        until = read_now(now) + lease  # after the lock: a wait for it costs no lease time
        return {
            task_id
            for task_id, token in leases
            if conn.execute(sql.RENEW, (until, task_id, token)).rowcount != 1
        }

    return in_transaction(conn, work)


def status_of(conn: sqlite3.Connection, task_id: str) -> TaskStatus | None:
    row = conn.execute("SELECT status FROM sitq_tasks WHERE id = ?", (task_id,)).fetchone()
    return None if row is None else TaskStatus(row[0])


def cancel(conn: sqlite3.Connection, task_id: str, now: float) -> TaskStatus | None:
    def work() -> TaskStatus | None:
        old = status_of(conn, task_id)
        action = on_cancel(old)
        if action is CancelAction.CANCEL_NOW:
            conn.execute(sql.CANCEL_NOW, (now, task_id))
            deps.follow(conn, [task_id], now)
        elif action is CancelAction.REQUEST:
            conn.execute(sql.REQUEST_CANCEL, (task_id,))
        return old

    return in_transaction(conn, work)


def requeue(conn: sqlite3.Connection, task_id: str, now: float) -> TaskStatus | None:
    def work() -> TaskStatus | None:
        row = conn.execute(sql.STATUS_AND_KEY, (task_id,)).fetchone()
        old, key = (None, None) if row is None else (TaskStatus(row[0]), row[1])
        holder = conn.execute(sql.KEY_HOLDER, (key, task_id)).fetchone() if key else None
        held_by = None if holder is None else str(holder[0])
        parents = deps.requeue_verdict(conn, task_id, now)
        new = on_requeue(old, key_held_by=held_by, parents=parents)
        if new is not None:
            conn.execute(sql.REQUEUE, (str(new), now, task_id))
            deps.follow(conn, [task_id], now)  # children cancelled for it wait again
        elif held_by is not None and on_requeue(old, parents=parents) is not None:
            raise UniqueKeyTakenError.of(task_id, str(key), held_by)
        elif old is not None and parents is not None:  # still cancelled: say why, as of now
            deps.store(conn, task_id, old, parents, now)
        return old

    return in_transaction(conn, work)


def prune(conn: sqlite3.Connection, older_than: float, now: Now, limit: int) -> int:
    def work() -> int:
        finished_before = read_clock(now, older_than)[1] - older_than
        ids = [row[0] for row in conn.execute(sql.PRUNE_IDS, (finished_before, limit))]
        for start in range(0, len(ids), MAX_VARIABLES):
            chunk = ids[start : start + MAX_VARIABLES]
            marks = ", ".join("?" for _ in chunk)
            conn.execute(f"DELETE FROM sitq_attempts WHERE task_id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM sitq_dependencies WHERE child_id IN ({marks})", chunk)
            conn.execute(f"DELETE FROM sitq_tasks WHERE id IN ({marks})", chunk)
        return len(ids)

    return in_transaction(conn, work)


def read_clock(now: Now, within: float) -> tuple[float, float]:
    """The moment `now` stands for, and that moment less the forward steps of the wall
    clock seen in the last `within` seconds when `now` is real time (a FakeClock's time as
    it is). Read once the write lock is ours: a wait for the lock never shortens a lease.

    Every worker on one SQLite file runs on one machine and shares its wall clock. A step
    of that clock forward by X (set by hand, NTP's first sync, a resume from suspend) makes
    every lease and finish time look X older at once, though every holder is alive. So for
    one lease period after a step a claim takes over only leases that would have expired
    without it (by then every live holder has renewed on the new clock), and for one
    retention period pruning deletes only what is old enough without it. A step back by X
    delays the takeover of a dead worker's tasks by X. A worker that starts after a step
    cannot know of it: within a third of a lease of one it may take a live lease."""
    moment = now() if callable(now) else float(now)
    clock = wall_clock_of(now)
    return moment, moment if clock is None else moment - clock.stepped_forward(within)


def get_tasks(conn: sqlite3.Connection, task_ids: list[str]) -> dict[str, TaskInfo]:
    rows = select_in(conn, f"SELECT {TASK_COLUMNS} FROM sitq_tasks", task_ids)
    return {row[0]: task_info(row) for row in rows}


def list_tasks(conn: sqlite3.Connection, query: str, params: Sequence[Any]) -> list[TaskInfo]:
    return [task_info(row) for row in conn.execute(query, params)]


def attempts(conn: sqlite3.Connection, query: str, params: Sequence[Any]) -> list[Attempt]:
    return [Attempt(*row) for row in conn.execute(query, params)]


def select_in(conn: sqlite3.Connection, select: str, ids: list[str]) -> list[Any]:
    """Run `select ... WHERE id IN (...)` in chunks that respect SQLite's variable limit."""
    rows: list[Any] = []
    for start in range(0, len(ids), MAX_VARIABLES):
        chunk = ids[start : start + MAX_VARIABLES]
        marks = ", ".join("?" for _ in chunk)
        rows += conn.execute(f"{select} WHERE id IN ({marks})", chunk).fetchall()
    return rows


# -- row conversions ---------------------------------------------------------------------


def lost_attempt_params(row: Any, lost_number: int) -> dict[str, Any]:
    """The history record of attempt `lost_number`, which a dead worker held (from a
    TAKE_OVER or END_SPENT row)."""
    task_id, name, _, _, _, _, expired_at, _, worker, started, scheduled = row[:11]
    return {
        "task_id": task_id,
        "task_name": name,
        "attempt": lost_number,
        "worker_id": worker,
        "scheduled_for": scheduled,
        "started_at": started,
        "finished_at": expired_at,
        "outcome": "worker_lost",
        "error_type": "WorkerLost",
        "error_message": f"worker {worker} stopped renewing its lease",
        "next_delay": None,
    }


def task_info(row: Any) -> TaskInfo:
    """A row of TASK_COLUMNS, in order, as a TaskInfo (the status text becomes the enum)."""
    task_id, name, status, *rest, result = row
    # mypy cannot count *rest: the row holds one value per TaskInfo field, result last
    return TaskInfo(task_id, name, TaskStatus(status), *rest, result=result)  # type: ignore[misc]


def settle_params(s: Settlement) -> dict[str, Any]:
    return {
        "task_id": s.task_id,
        "token": s.token,
        "status": str(s.status),
        "started_at": None if s.attempt is None else s.attempt.started_at,
        "due_at": s.due_at,
        "refund": int(s.refund_attempt),
        "finished_at": s.finished_at,
        "result": s.result,
        "keep_error": int(s.keeps_error),
        "error": s.error,
        "error_type": s.error_type,
        "traceback": s.traceback,
        "keep_last_delay": int(s.keeps_last_delay),
        "next_delay": s.next_delay,
        "worker_id": None if s.attempt is None else s.attempt.worker_id,
        "holds_key": int(s.status in HOLDS_UNIQUE_KEY),
    }


def attempt_params(a: Attempt) -> dict[str, Any]:
    return {
        "task_id": a.task_id,
        "task_name": a.task_name,
        "attempt": a.attempt,
        "worker_id": a.worker_id,
        "scheduled_for": a.scheduled_for,
        "started_at": a.started_at,
        "finished_at": a.finished_at,
        "outcome": a.outcome,
        "error_type": a.error_type,
        "error_message": a.error_message,
        "next_delay": a.next_delay,
    }
