"""SQLiteBackend: a durable queue in one file (or in memory), on aiosqlite.

Why SQLite: it ships with Python, a file in WAL mode lets many readers work beside one
writer, and every claim is one atomic statement, so two workers (even in two processes)
can never take the same task. The schema lives at the top of this file as plain SQL.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Collection, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiosqlite

from sitq.backends.base import ClaimedTask, LostAttempt, NewTask, Settlement, Signal
from sitq.errors import BackendError, QueueClosedError, SchemaVersionError
from sitq.task import WAITING, Attempt, TaskInfo, TaskStatus

SCHEMA_VERSION = 1

SCHEMA = """
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
    last_delay       REAL                      -- backoff chosen after the last failed attempt
);
CREATE INDEX IF NOT EXISTS sitq_tasks_waiting
    ON sitq_tasks (due_at) WHERE status IN ('queued', 'scheduled', 'retrying');
CREATE INDEX IF NOT EXISTS sitq_tasks_leased
    ON sitq_tasks (lease_expires_at) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS sitq_tasks_status ON sitq_tasks (status);
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
"""

# One statement leases the due tasks: atomic, so no task is ever handed out twice. Rows
# whose lease expired are taken over too; SET expressions see the old row, so the lost
# attempt's worker and times are kept in the lost_* columns for the worker to record.
CLAIM = """
UPDATE sitq_tasks SET
    status = 'running',
    attempts = attempts + 1,
    lease_token = lease_token + 1,
    lease_expires_at = :lease_until,
    lost_worker_id = CASE WHEN status = 'running' THEN worker_id END,
    lost_started_at = CASE WHEN status = 'running' THEN started_at END,
    lost_scheduled_for = CASE WHEN status = 'running' THEN due_at END,
    due_at = CASE WHEN status = 'running' THEN lease_expires_at ELSE due_at END,
    worker_id = :worker_id,
    started_at = :now,
    cancel_requested = 0,
    progress = NULL,
    progress_message = NULL
WHERE seq IN (
    SELECT seq FROM (
        SELECT seq, priority, due_at FROM sitq_tasks
         WHERE status IN ('queued', 'scheduled', 'retrying') AND due_at <= :now
        UNION ALL
        SELECT seq, priority, lease_expires_at FROM sitq_tasks
         WHERE status = 'running' AND lease_expires_at < :now
    ) ORDER BY priority DESC, due_at, seq LIMIT :limit
)
RETURNING id, name, payload, attempts, attempts - retry_base, lease_token, due_at,
          enqueued_at, lost_worker_id, lost_started_at, lost_scheduled_for, last_delay
"""

SETTLE = """
UPDATE sitq_tasks SET
    status = :status,
    due_at = COALESCE(:due_at, due_at),
    attempts = attempts - :refund,
    finished_at = CASE WHEN :status IN ('succeeded', 'failed', 'cancelled')
                       THEN :now ELSE finished_at END,
    result = COALESCE(:result, result),
    -- a refund that brings no error of its own (a hand-back, a deferral) keeps the last one
    error = CASE WHEN :refund AND :error_type IS NULL THEN error ELSE :error END,
    error_type = CASE WHEN :refund AND :error_type IS NULL THEN error_type ELSE :error_type END,
    traceback = CASE WHEN :refund AND :error_type IS NULL THEN traceback ELSE :traceback END,
    -- decorrelated jitter grows from the delay chosen last time: keep it for the next claim
    last_delay = CASE WHEN :status = 'retrying' THEN :next_delay ELSE last_delay END,
    lease_expires_at = NULL
WHERE id = :task_id AND lease_token = :token AND status = 'running'
"""

INSERT_ATTEMPT = """
INSERT INTO sitq_attempts (task_id, task_name, attempt, worker_id, scheduled_for, started_at,
                           finished_at, outcome, error_type, error_message, next_delay)
VALUES (:task_id, :task_name, :attempt, :worker_id, :scheduled_for, :started_at,
        :finished_at, :outcome, :error_type, :error_message, :next_delay)
"""

TASK_COLUMNS = (
    "id, name, status, attempts, enqueued_at, due_at, priority, started_at, finished_at, "
    "worker_id, error, error_type, traceback, progress, progress_message, result"
)
ATTEMPT_COLUMNS = (
    "task_id, task_name, attempt, worker_id, scheduled_for, started_at, finished_at, "
    "outcome, error_type, error_message, next_delay"
)
MAX_VARIABLES = 900  # stay well under SQLite's limit on ? placeholders per statement


class SQLiteBackend:
    """A queue stored in one SQLite file in WAL mode, or in memory with `":memory:"`.

    One backend object holds one connection. Queue and worker can share it (as in the
    tutorial), and then a worker wakes the moment a task is enqueued. Workers in other
    processes open their own backend on the same file and find work by polling every
    `poll_interval` seconds, or at the next due time, whichever is first.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "sitq.db",
        *,
        busy_timeout: float = 30.0,
        poll_interval: float = 0.5,
        synchronous: str = "NORMAL",
    ) -> None:
        self.path = str(path)
        self.busy_timeout = busy_timeout
        self.poll_interval = poll_interval
        self.synchronous = synchronous
        self.work_signal = Signal()
        self.settle_signal = Signal()
        self._conn: aiosqlite.Connection | None = None
        self._users = 0
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r})"

    # -- opening and closing -------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._conn is not None

    @property
    def is_memory(self) -> bool:
        return self.path == ":memory:" or "mode=memory" in self.path

    async def connect(self) -> None:
        self._users += 1
        if self._conn is not None:
            return
        try:
            self._prepare_file()
            conn = await aiosqlite.connect(
                self.path,
                isolation_level=None,
                timeout=self.busy_timeout,
                uri=self.path.startswith("file:"),
            )
        except (OSError, sqlite3.Error) as exc:
            self._users -= 1
            raise BackendError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            await self._setup(conn)
        except BaseException:
            self._users -= 1
            await conn.close()
            raise
        self._conn = conn

    def _prepare_file(self) -> None:
        """Check the folder exists and create a new file readable by its owner only."""
        if self.is_memory or self.path.startswith("file:"):
            return
        path = Path(self.path)
        if not path.parent.is_dir():
            raise BackendError(
                f"the folder {str(path.parent)!r} for database {self.path!r} does not exist; "
                "create it first or choose another path"
            )
        if not path.exists():
            with suppress(FileExistsError):  # another process created it a moment ago
                os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))

    async def _setup(self, conn: aiosqlite.Connection) -> None:
        try:
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            if not self.is_memory:
                await conn.execute("PRAGMA journal_mode = WAL")
                await conn.execute(f"PRAGMA synchronous = {self.synchronous}")
            await conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(SCHEMA):
                    await conn.execute(statement)
                await _add_missing_columns(conn)
                await self._check_version(conn)
                await conn.execute("COMMIT")
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc) or "read-only" in str(exc):
                raise BackendError(
                    f"database {self.path!r} is read-only: a queue must write to it. Fix the "
                    "file's permissions or copy it somewhere writable."
                ) from exc
            raise BackendError(f"cannot set up database {self.path!r}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise BackendError(f"{self.path!r} is not a usable SQLite database: {exc}") from exc

    async def _check_version(self, conn: aiosqlite.Connection) -> None:
        rows = await conn.execute_fetchall(
            "SELECT value FROM sitq_meta WHERE key = 'schema_version'"
        )
        if not rows:
            await conn.execute(
                "INSERT INTO sitq_meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            return
        found = int(rows[0][0])
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"database {self.path!r} has schema version {found}, but this sitq knows "
                f"version {SCHEMA_VERSION} at most: upgrade sitq to use it"
            )
        # A no-op write: SQLite opens a read-only file without complaint and only objects
        # at the first write. Better to find out here, with a clear message, than at enqueue.
        await conn.execute("UPDATE sitq_meta SET value = value WHERE key = 'schema_version'")

    async def close(self) -> None:
        if self._users > 0:
            self._users -= 1
        if self._users == 0 and self._conn is not None:
            conn, self._conn = self._conn, None
            async with self._lock:
                await conn.close()

    # -- helpers -------------------------------------------------------------------------

    def _require(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise QueueClosedError(
                f"{self!r} is not connected: call `await queue.connect()` (or use "
                "`async with queue:`) before using it, and not after `close()`"
            )
        return self._conn

    @asynccontextmanager
    async def _transaction(self) -> Any:
        """One write transaction at a time on this connection (BEGIN IMMEDIATE).

        IMMEDIATE takes the write lock up front, so two processes never deadlock trying to
        upgrade a read into a write: one waits (busy_timeout) and then proceeds.
        """
        async with self._lock:
            conn = self._require()
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            await conn.execute("COMMIT")

    async def _fetch(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        async with self._lock:
            return list(await self._require().execute_fetchall(sql, params))

    # -- writing -------------------------------------------------------------------------

    async def add_tasks(self, tasks: Sequence[NewTask]) -> None:
        rows = [
            (t.task_id, t.name, t.payload, str(t.status), t.priority, t.enqueued_at, t.due_at)
            for t in tasks
        ]
        async with self._transaction() as conn:
            await conn.executemany(
                "INSERT INTO sitq_tasks (id, name, payload, status, priority, enqueued_at, "
                "due_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        self.work_signal.ring()

    async def claim(
        self, worker_id: str, limit: int, now: float, lease_seconds: float
    ) -> list[ClaimedTask]:
        params = {
            "worker_id": worker_id,
            "limit": limit,
            "now": now,
            "lease_until": now + lease_seconds,
        }
        rows = await self._fetch(CLAIM, params)
        return [_claimed(row, now) for row in rows]

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if not settlements:
            return []
        async with self._transaction() as conn:
            tokens = await _current_tokens(conn, [s.task_id for s in settlements])
            accepted = [tokens.get(s.task_id) == s.token for s in settlements]
            valid = [s for s, ok in zip(settlements, accepted, strict=True) if ok]
            await conn.executemany(SETTLE, [_settle_params(s) for s in valid])
            records = [s.attempt for s in valid if s.attempt is not None]
            await conn.executemany(INSERT_ATTEMPT, [_attempt_params(a) for a in records])
        if any(s.status in WAITING for s in valid):
            self.work_signal.ring()
        self.settle_signal.ring()
        return accepted

    async def append_attempt(self, attempt: Attempt) -> None:
        async with self._transaction() as conn:
            await conn.execute(INSERT_ATTEMPT, _attempt_params(attempt))

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], now: float, lease_seconds: float
    ) -> set[str]:
        if not leases:
            return set()
        async with self._transaction() as conn:
            await conn.executemany(
                "UPDATE sitq_tasks SET lease_expires_at = ? "
                "WHERE id = ? AND lease_token = ? AND status = 'running'",
                [(now + lease_seconds, task_id, token) for task_id, token in leases],
            )
            rows = await _select_in(
                conn,
                "SELECT id, lease_token, status, cancel_requested FROM sitq_tasks",
                [task_id for task_id, _ in leases],
            )
        held = {row[0]: row for row in rows}
        lost = set()
        for task_id, token in leases:
            row = held.get(task_id)
            if row is None or row[1] != token or row[2] != "running" or row[3]:
                lost.add(task_id)
        return lost

    async def set_progress(self, task_id: str, token: int, progress: float, message: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "UPDATE sitq_tasks SET progress = ?, progress_message = ? "
                "WHERE id = ? AND lease_token = ? AND status = 'running'",
                (progress, message, task_id, token),
            )

    async def cancel(self, task_id: str, now: float) -> TaskStatus | None:
        async with self._transaction() as conn:
            old = await _status_of(conn, task_id)
            if old in WAITING:
                await conn.execute(
                    "UPDATE sitq_tasks SET status = 'cancelled', finished_at = ?, "
                    "error = 'cancelled before it ran', error_type = 'Cancelled' WHERE id = ?",
                    (now, task_id),
                )
            elif old is TaskStatus.RUNNING:
                await conn.execute(
                    "UPDATE sitq_tasks SET cancel_requested = 1 WHERE id = ?", (task_id,)
                )
        if old in WAITING:
            self.settle_signal.ring()
        return old

    async def requeue(self, task_id: str, now: float) -> TaskStatus | None:
        async with self._transaction() as conn:
            old = await _status_of(conn, task_id)
            if old in (TaskStatus.FAILED, TaskStatus.CANCELLED):
                await conn.execute(
                    "UPDATE sitq_tasks SET status = 'queued', due_at = ?, retry_base = attempts,"
                    " finished_at = NULL, result = NULL, error = NULL, error_type = NULL, "
                    "traceback = NULL, cancel_requested = 0, last_delay = NULL WHERE id = ?",
                    (now, task_id),
                )
        if old in (TaskStatus.FAILED, TaskStatus.CANCELLED):
            self.work_signal.ring()
        return old

    async def purge(self, statuses: Collection[TaskStatus]) -> int:
        names = [str(s) for s in statuses]
        if not names:
            return 0
        marks = ", ".join("?" for _ in names)
        async with self._transaction() as conn:
            cursor = await conn.execute(f"DELETE FROM sitq_tasks WHERE status IN ({marks})", names)
            return cursor.rowcount

    # -- reading -------------------------------------------------------------------------

    async def next_due_at(self) -> float | None:
        rows = await self._fetch(
            "SELECT MIN(due_at) FROM sitq_tasks WHERE status IN ('queued', 'scheduled', 'retrying')"
        )
        return rows[0][0] if rows else None

    async def get_tasks(self, task_ids: Collection[str]) -> dict[str, TaskInfo]:
        async with self._lock:
            rows = await _select_in(
                self._require(), f"SELECT {TASK_COLUMNS} FROM sitq_tasks", list(task_ids)
            )
        return {row[0]: _task_info(row) for row in rows}

    async def list_tasks(
        self, statuses: Collection[TaskStatus] | None = None, limit: int | None = None
    ) -> list[TaskInfo]:
        sql = f"SELECT {TASK_COLUMNS} FROM sitq_tasks"
        params: list[Any] = []
        if statuses is not None:
            params = [str(s) for s in statuses]
            sql += f" WHERE status IN ({', '.join('?' for _ in params)})"
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        return [_task_info(row) for row in await self._fetch(sql, params)]

    async def counts(self) -> dict[TaskStatus, int]:
        rows = await self._fetch("SELECT status, COUNT(*) FROM sitq_tasks GROUP BY status")
        found = {TaskStatus(status): n for status, n in rows}
        return {status: found.get(status, 0) for status in TaskStatus}

    async def attempts(self, task_id: str | None = None) -> list[Attempt]:
        sql = f"SELECT {ATTEMPT_COLUMNS} FROM sitq_attempts"
        params: tuple[Any, ...] = ()
        if task_id is not None:
            sql += " WHERE task_id = ?"
            params = (task_id,)
        rows = await self._fetch(sql + " ORDER BY seq", params)
        return [Attempt(*row) for row in rows]


# -- row conversions (module-level: they need no connection) -----------------------------


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _claimed(row: Any, now: float) -> ClaimedTask:
    (
        task_id,
        name,
        payload,
        attempt,
        try_number,
        token,
        due_at,
        enqueued_at,
        lost_worker,
        lost_started,
        lost_scheduled,
        last_delay,
    ) = row
    lost = None
    if lost_worker is not None:
        lost = LostAttempt(lost_worker, lost_started, lost_scheduled)
    return ClaimedTask(
        task_id,
        name,
        payload,
        attempt,
        try_number,
        token,
        due_at,
        enqueued_at,
        now,
        lost,
        last_delay,
    )


def _task_info(row: Any) -> TaskInfo:
    """A row of TASK_COLUMNS, in order, as a TaskInfo (the status text becomes the enum)."""
    task_id, name, status, *rest = row
    return TaskInfo(task_id, name, TaskStatus(status), *rest)


def _settle_params(s: Settlement) -> dict[str, Any]:
    return {
        "task_id": s.task_id,
        "token": s.token,
        "status": str(s.status),
        "now": s.now,
        "due_at": s.due_at,
        "refund": int(s.refund_attempt),
        "result": s.result,
        "error": s.error,
        "error_type": s.error_type,
        "traceback": s.traceback,
        "next_delay": None if s.attempt is None else s.attempt.next_delay,
    }


def _attempt_params(a: Attempt) -> dict[str, Any]:
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


async def _select_in(conn: aiosqlite.Connection, select: str, ids: list[str]) -> list[Any]:
    """Run `select ... WHERE id IN (...)` in chunks that respect SQLite's variable limit."""
    rows: list[Any] = []
    for start in range(0, len(ids), MAX_VARIABLES):
        chunk = ids[start : start + MAX_VARIABLES]
        marks = ", ".join("?" for _ in chunk)
        rows += await conn.execute_fetchall(f"{select} WHERE id IN ({marks})", chunk)
    return rows


async def _current_tokens(conn: aiosqlite.Connection, ids: list[str]) -> dict[str, int]:
    rows = await _select_in(conn, "SELECT id, lease_token, status FROM sitq_tasks", ids)
    return {task_id: token for task_id, token, status in rows if status == "running"}


async def _add_missing_columns(conn: aiosqlite.Connection) -> None:
    """Add columns newer than the file (CREATE TABLE IF NOT EXISTS leaves old tables be)."""
    rows = await conn.execute_fetchall("PRAGMA table_info(sitq_tasks)")
    if "last_delay" not in {row[1] for row in rows}:
        await conn.execute("ALTER TABLE sitq_tasks ADD COLUMN last_delay REAL")


async def _status_of(conn: aiosqlite.Connection, task_id: str) -> TaskStatus | None:
    rows = list(
        await conn.execute_fetchall("SELECT status FROM sitq_tasks WHERE id = ?", (task_id,))
    )
    return TaskStatus(rows[0][0]) if rows else None
