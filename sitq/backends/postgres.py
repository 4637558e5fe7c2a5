"""PostgresBackend: one queue shared by workers on many machines, on asyncpg.

Why PostgreSQL: SQLite has one writer, so workers in several processes mostly wait for
each other. PostgreSQL locks rows, not the file: with `FOR UPDATE SKIP LOCKED` each claim
takes rows nobody else holds and never waits for another claim, so workers scale out.
The rules are the same as SQLite's (`sitq.state`), and so are the tables and columns
(the SQL is in `sitq.backends.postgres_sql`).

How it talks to the server:

- a small pool of connections for the operations, and one more connection that LISTENs,
  so a worker waiting for work wakes the moment another process enqueues (NOTIFY);
- each operation is one statement (an atomic transaction by itself) or one explicit
  transaction; batches travel as arrays, so a batch costs one round trip;
- a cancelled caller (a timeout, `worker.stop()`, Ctrl-C) leaves no transaction open and
  no lock held: asyncpg asks the server to cancel the statement and the pool rolls the
  connection back before anyone else uses it;
- a lost connection (a server restart, `pg_terminate_backend`) is not an error for long:
  the operation runs again on a fresh connection until `reconnect_timeout`. That is safe
  because every operation can run twice: the fencing token refuses a second settle (and
  the first is recognised), a second enqueue is not done if the first one committed, and
  a claim whose answer was lost leaves its tasks to be taken over when their lease ends.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeAlias, TypeVar

import asyncpg

from sitq.backends import postgres_sql as sql
from sitq.backends.base import (
    ClaimedTask,
    LostAttempt,
    NewTask,
    Now,
    Settlement,
    Signal,
    read_now,
)
from sitq.errors import BackendError, InvalidOptionError, QueueClosedError, SchemaVersionError
from sitq.state import CancelAction, on_cancel, on_requeue
from sitq.task import TERMINAL, WAITING, Attempt, TaskInfo, TaskStatus

logger = logging.getLogger("sitq.backends.postgres")
T = TypeVar("T")
Connection: TypeAlias = asyncpg.Connection  # asyncpg has no type hints: Any to mypy
#: A schema name sitq can put in SQL and in a NOTIFY channel name without surprises.
SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,49}")
#: Errors that mean "the connection is gone" (not "the statement is wrong"): run again.
CONNECTION_LOST: tuple[type[BaseException], ...] = (
    OSError,  # refused while the server restarts, reset by the network
    asyncpg.exceptions.PostgresConnectionError,  # class 08, and "closed mid-operation"
    asyncpg.exceptions.AdminShutdownError,  # pg_terminate_backend, a fast shutdown
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.CannotConnectNowError,  # the server is starting up
    asyncpg.exceptions.ConnectionDoesNotExistError,
)
#: First pause before running an operation again after a lost connection; doubles to 1 s.
RETRY_FIRST_PAUSE = 0.05


class PostgresBackend:
    """A queue stored in PostgreSQL, in its own schema (default "sitq") of any database.

    dsn: a libpq URL, e.g. "postgresql://user@host:5432/db". schema: where sitq keeps its
    tables, so several queues (or other applications) can share a database. pool_size:
    the most connections operations use at once (a worker needs about four: claim,
    settle, heartbeat, progress), plus one that listens for notifications.
    reconnect_timeout: how long an operation keeps trying when the connection is lost.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "sitq",
        pool_size: int = 4,
        poll_interval: float = 0.5,
        connect_timeout: float = 10.0,
        reconnect_timeout: float = 30.0,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.lower().startswith(("postgresql://", "postgres://")):
            raise InvalidOptionError(
                f"dsn must be a postgresql:// URL, e.g. postgresql://user@host:5432/db; got {dsn!r}"
            )
        if not isinstance(schema, str) or not SCHEMA_NAME.fullmatch(schema):
            raise InvalidOptionError(
                "schema must be a name of letters, digits and underscores (at most 50, not "
                f"starting with a digit), e.g. 'sitq'; got {schema!r}"
            )
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise InvalidOptionError(f"pool_size must be an int >= 1, got {pool_size!r}")
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self.poll_interval = _positive_seconds("poll_interval", poll_interval)
        self.connect_timeout = _positive_seconds("connect_timeout", connect_timeout)
        self.reconnect_timeout = _positive_seconds("reconnect_timeout", reconnect_timeout)
        #: Shown in pg_stat_activity, so an administrator sees whose sessions these are.
        self.application_name = f"sitq:{schema}"
        self.work_signal = Signal()
        self.settle_signal = Signal()
        self._remote_change = Signal()  # rung by NOTIFYs from other backends
        self._channel = f"sitq_work.{schema}"
        self._me = uuid.uuid4().hex  # our own NOTIFYs carry this: we ignore their echo
        self._pool: asyncpg.Pool | None = None
        self._listener: Connection | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._users = 0
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresBackend({_redacted(self.dsn)!r}, schema={self.schema!r})"

    # -- opening and closing -------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._pool is not None

    async def connect(self) -> None:
        self._users += 1
        try:
            async with self._opening:
                if self._pool is None:
                    self._pool = await self._open_pool()
                    await self._listen()
        except BaseException:
            self._users -= 1
            if self._users == 0:
                await self._shut()
            raise

    async def close(self) -> None:
        if self._users > 0:
            self._users -= 1
        if self._users == 0:
            await self._shut()

    async def _open_pool(self) -> asyncpg.Pool:
        try:
            pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.pool_size, **self._connect_options()
            )
        except (*CONNECTION_LOST, asyncpg.PostgresError, TimeoutError) as exc:
            raise BackendError(f"cannot connect to {_redacted(self.dsn)}: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                await self._set_up(conn)
        except BaseException:
            pool.terminate()
            raise
        return pool

    def _connect_options(self) -> dict[str, Any]:
        """Every connection looks in sitq's schema first, and says who it is."""
        return {
            "timeout": self.connect_timeout,
            "server_settings": {
                "search_path": f'"{self.schema}"',
                "application_name": self.application_name,
            },
        }

    async def _set_up(self, conn: Connection) -> None:
        """Create (or check) the schema.

        A schema already at this version needs no DDL at all, so a worker starting beside
        busy ones takes no table lock (CREATE INDEX IF NOT EXISTS would, and deadlock with
        a running claim). Otherwise the advisory lock makes starters take turns: the first
        creates everything, the others then find the version written and do nothing.
        """
        if await self._stored_version(conn) == sql.SCHEMA_VERSION:
            return
        key = sql.SETUP_LOCK_KEY + self.schema
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", key)
        try:
            # Begun once the lock is ours, so it sees what the previous holder committed
            # (a transaction begun before would look at the catalogs as they were then).
            async with conn.transaction():
                if await self._stored_version(conn) == sql.SCHEMA_VERSION:
                    return  # another process made it while we waited for the lock
                logger.info("creating sitq schema %r (version %d)", self.schema,
                            sql.SCHEMA_VERSION)  # fmt: skip
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                await conn.execute(sql.SCHEMA)
                await conn.execute(sql.WRITE_VERSION, str(sql.SCHEMA_VERSION))
        finally:
            await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", key)

    async def _stored_version(self, conn: Connection) -> int | None:
        """The schema version sitq wrote here (None: no sitq schema yet); a newer one than
        this sitq knows is refused."""
        if await conn.fetchval("SELECT to_regclass($1)", f'"{self.schema}".sitq_meta') is None:
            return None
        found = await conn.fetchval(sql.READ_VERSION)
        if found is None:
            return None
        version = _version(found, self.schema)
        if version > sql.SCHEMA_VERSION:
            raise SchemaVersionError(
                f"schema {self.schema!r} has sitq schema version {found}, but this sitq "
                f"knows version {sql.SCHEMA_VERSION} at most: upgrade sitq to use it"
            )
        return version

    async def _shut(self) -> None:
        pool, self._pool = self._pool, None
        if self._relisten is not None:
            self._relisten.cancel()
            self._relisten = None
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.terminate()  # no goodbye needed: LISTEN ends with the session
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.connect_timeout)
            # mypy wrongly rejects a starred tuple of exception classes here (ruff wants the star)
            except (TimeoutError, *CONNECTION_LOST):  # type: ignore[misc]
                pool.terminate()

    # -- LISTEN/NOTIFY: waking idle workers in other processes ---------------------------

    async def _listen(self) -> None:
        """Open the listening connection; when the server drops it, open it again."""
        conn = await asyncpg.connect(self.dsn, **self._connect_options())
        await conn.add_listener(self._channel, self._on_notify)
        conn.add_termination_listener(self._on_listener_lost)
        self._listener = conn

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if payload != self._me:
            self.work_signal.ring()
            self._remote_change.ring()

    def _on_listener_lost(self, _conn: object) -> None:
        if self._pool is not None and (self._relisten is None or self._relisten.done()):
            self._listener = None
            self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        pause = RETRY_FIRST_PAUSE
        while self._pool is not None:
            try:
                await self._listen()
            except (*CONNECTION_LOST, asyncpg.PostgresError, TimeoutError) as exc:
                logger.warning("cannot LISTEN on %s yet (%s); trying again", self, exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
                continue
            # Notifications sent while we were away are lost: everyone looks again.
            self.work_signal.ring()
            self._remote_change.ring()
            return

    async def wait_for_change(self, timeout: float | None) -> None:
        """Return when another process NOTIFYs new work, or at `timeout`."""
        await Signal.wait(self._remote_change.ticket(), timeout)

    # -- the one way in: an operation on a pooled connection, again if the link drops -----

    async def _run(
        self,
        operation: Callable[[Connection], Awaitable[T]],
        *,
        again: Callable[[Connection], Awaitable[T | None]] | None = None,
    ) -> T:
        """Run `operation(connection)` on a pooled connection; if the connection is lost,
        run it again on a new one until `reconnect_timeout`. `again`, if given, runs first
        on a retry: when it returns a value, the lost attempt had in fact committed.

        A cancelled caller is safe: asyncpg asks the server to cancel the statement, and
        the pool rolls the connection back before anyone else gets it.
        """
        deadline = time.monotonic() + self.reconnect_timeout
        pause = RETRY_FIRST_PAUSE
        retrying = False
        while True:
            pool = self._require_pool()
            try:
                conn = await pool.acquire()
                try:
                    if retrying and again is not None:
                        known = await again(conn)
                        if known is not None:
                            return known
                    return await operation(conn)
                except asyncpg.exceptions.InternalClientError as exc:
                    # Seen on a pooled connection the server ended while it sat idle:
                    # asyncpg refuses to start a statement on it. Nothing was sent.
                    conn.terminate()
                    raise ConnectionResetError(f"unusable connection: {exc}") from exc
                finally:
                    await _release(pool, conn)
            except CONNECTION_LOST as exc:
                if time.monotonic() + pause > deadline:
                    raise BackendError(
                        f"lost the connection to {_redacted(self.dsn)} and could not get it "
                        f"back within {self.reconnect_timeout:g}s: {exc}"
                    ) from exc
                if not retrying:
                    logger.warning("%s: connection lost (%s); reconnecting", self, exc)
                retrying = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise QueueClosedError(
                f"{self!r} is not connected: call `await queue.connect()` (or use "
                "`async with queue:`) before using it, and not after `close()`"
            )
        return self._pool

    async def _fetch(self, statement: str, *args: Any) -> list[Any]:
        return await self._run(lambda conn: conn.fetch(statement, *args))

    async def _execute(self, statement: str, *args: Any) -> int:
        """Run one statement (atomic by itself); return how many rows it changed."""
        status = await self._run(lambda conn: conn.execute(statement, *args))
        return _row_count(status)

    async def _notify_work(self, conn: Connection) -> None:
        await conn.execute(sql.NOTIFY, self._channel, self._me)

    # -- writing -------------------------------------------------------------------------

    async def add_tasks(self, tasks: Sequence[NewTask]) -> None:
        if not tasks:
            return
        columns = [list(column) for column in zip(*map(_task_row, tasks), strict=True)]
        ids = columns[0]

        async def add(conn: Connection) -> None:
            await conn.execute(sql.ADD_TASKS, *columns, self._channel, self._me)

        async def added_already(conn: Connection) -> bool | None:
            # All or nothing: if the first id is there, the lost attempt committed.
            return True if await conn.fetch(sql.EXISTING_IDS, ids[:1]) else None

        await self._run(add, again=added_already)
        self.work_signal.ring()

    async def claim(
        self,
        worker_id: str,
        limit: int,
        now: Now,
        lease_seconds: float,
        *,
        held: Collection[str] = (),
        default_budget: tuple[int, str] | None = None,
    ) -> list[ClaimedTask]:
        """One statement takes over expired leases and claims due tasks (see sql.CLAIM).

        `now` is read just before it is sent: with SKIP LOCKED a claim never queues behind
        another worker's rows, so no wait for a lock can eat into the lease.
        """
        if limit <= 0:
            return []
        budget = default_budget or (None, None)
        held_ids = list(held)

        async def claim(conn: Connection) -> list[ClaimedTask]:
            moment = read_now(now)
            rows = await conn.fetch(sql.CLAIM, worker_id, moment, moment + lease_seconds,
                                    limit, held_ids, *budget)  # fmt: skip
            return [_claimed(row, moment) for row in rows]

        return await self._run(claim)

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if not settlements:
            return []
        accepted = [False] * len(settlements)
        for batch in _rounds(settlements):  # one round unless a task is settled twice
            for position, ok in zip(batch, await self._settle_round(settlements, batch),
                                    strict=True):  # fmt: skip
                accepted[position] = ok
        waits_again = any(ok and s.status in WAITING for s, ok in zip(settlements, accepted,
                                                                       strict=True))  # fmt: skip
        if waits_again:
            await self._run(self._notify_work)
            self.work_signal.ring()
        self.settle_signal.ring()
        return accepted

    async def _settle_round(
        self, settlements: Sequence[Settlement], batch: list[int]
    ) -> list[bool]:
        chosen = [settlements[i] for i in batch]
        stored_before: set[int] = set()  # found stored by an attempt whose COMMIT was lost

        async def settle(conn: Connection) -> list[bool]:
            rest = [i for i in range(len(chosen)) if i not in stored_before]
            rows = [_settle_row(chosen[i]) for i in rest]
            columns = [list(column) for column in zip(*rows, strict=True)]
            found = await conn.fetch(sql.SETTLE, *columns) if rest else []
            done = {rest[row[0] - 1] for row in found}  # WITH ORDINALITY counts from 1
            return [i in done or i in stored_before for i in range(len(chosen))]

        async def settled_already(conn: Connection) -> None:
            # A row whose token is still ours and that no longer runs can only have been
            # settled by us: those are done; `settle` then runs for the others only.
            rows = await conn.fetch(sql.SETTLED_WITH, [s.task_id for s in chosen])
            ours = {(row[0], row[1]) for row in rows}
            stored_before.update(i for i, s in enumerate(chosen) if (s.task_id, s.token) in ours)

        return await self._run(settle, again=settled_already)

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], now: Now, lease_seconds: float
    ) -> set[str]:
        if not leases:
            return set()
        ids = [task_id for task_id, _ in leases]
        tokens = [token for _, token in leases]

        async def renew(conn: Connection) -> set[str]:
            async with conn.transaction():
                await conn.execute(sql.LOCK_LEASES, ids)
                until = read_now(now) + lease_seconds  # after the rows are ours
                renewed = {row[0] for row in await conn.fetch(sql.RENEW, until, ids, tokens)}
            return set(ids) - renewed

        return await self._run(renew)

    async def set_progress(self, task_id: str, token: int, progress: float, message: str) -> None:
        await self._execute(sql.SET_PROGRESS, progress, message, task_id, token)

    async def cancel(self, task_id: str, now: float) -> TaskStatus | None:
        async def cancel(conn: Connection) -> TaskStatus | None:
            async with conn.transaction():
                old = _status(await conn.fetchval(sql.STATUS_FOR_UPDATE, task_id))
                action = on_cancel(old)
                if action is CancelAction.CANCEL_NOW:
                    await conn.execute(sql.CANCEL_NOW, now, task_id)
                elif action is CancelAction.REQUEST:
                    await conn.execute(sql.REQUEST_CANCEL, task_id)
            return old

        old = await self._run(cancel)
        if on_cancel(old) is CancelAction.CANCEL_NOW:
            self.settle_signal.ring()
        return old

    async def requeue(self, task_id: str, now: float) -> TaskStatus | None:
        async def requeue(conn: Connection) -> TaskStatus | None:
            async with conn.transaction():
                old = _status(await conn.fetchval(sql.STATUS_FOR_UPDATE, task_id))
                new = on_requeue(old)
                if new is not None:
                    await conn.execute(sql.REQUEUE, str(new), now, task_id)
                    await self._notify_work(conn)
            return old

        old = await self._run(requeue)
        if on_requeue(old) is not None:
            self.work_signal.ring()
        return old

    async def purge(self, statuses: Collection[TaskStatus]) -> int:
        names = [str(s) for s in statuses]
        return await self._execute(sql.PURGE, names) if names else 0

    async def prune(self, finished_before: float, limit: int) -> int:
        rows = await self._fetch(sql.PRUNE, finished_before, limit)
        return int(rows[0][0])

    # -- reading -------------------------------------------------------------------------

    async def next_due_at(self) -> float | None:
        rows = await self._fetch(sql.NEXT_DUE)
        return rows[0][0] if rows else None

    async def get_tasks(self, task_ids: Collection[str]) -> dict[str, TaskInfo]:
        ids = list(task_ids)
        if not ids:
            return {}
        return {row[0]: _task_info(row) for row in await self._fetch(sql.GET_TASKS, ids)}

    async def list_tasks(
        self, statuses: Collection[TaskStatus] | None = None, limit: int | None = None
    ) -> list[TaskInfo]:
        params: list[Any]  # the statuses (a text[]), then the limit
        query, params = sql.LIST_TASKS, []
        if statuses is not None:
            params.append([str(s) for s in statuses])
            query += " WHERE status = ANY($1::text[])"
        query += " ORDER BY seq"
        if limit is not None:
            params.append(int(limit))
            query += f" LIMIT ${len(params)}"
        return [_task_info(row) for row in await self._fetch(query, *params)]

    async def counts(self) -> dict[TaskStatus, int]:
        found = {TaskStatus(status): n for status, n in await self._fetch(sql.COUNTS)}
        return {status: found.get(status, 0) for status in TaskStatus}

    async def attempts(self, task_id: str | None = None) -> list[Attempt]:
        if task_id is None:
            rows = await self._fetch(sql.LIST_ATTEMPTS + " ORDER BY seq")
        else:
            rows = await self._fetch(sql.LIST_ATTEMPTS + " WHERE task_id = $1 ORDER BY seq",
                                     task_id)  # fmt: skip
        return [Attempt(*row) for row in rows]


# -- row conversions ----------------------------------------------------------------------


async def _release(pool: asyncpg.Pool, conn: Connection) -> None:
    """Give a connection back. The pool resets it first; if the server has just ended the
    session, that fails and the pool drops it. The operation's result stands either way
    (it committed): losing it here would strand claimed tasks or settled outcomes."""
    try:
        await pool.release(conn)
    except (*CONNECTION_LOST, asyncpg.exceptions.InternalClientError) as exc:
        logger.info("a connection ended as it was given back to the pool (%s)", exc)


def _task_row(t: NewTask) -> tuple[Any, ...]:
    return (t.task_id, t.name, t.payload, str(t.status), t.priority, t.enqueued_at, t.due_at,
            t.max_attempts, t.retry_policy)  # fmt: skip


def _claimed(row: Any, now: float) -> ClaimedTask:
    """A row of sql.CLAIM: a "taken first" flag, CLAIM_RETURNING's columns, two for order."""
    (_, task_id, name, payload, attempt, try_number, token, due_at, enqueued_at, lost_worker,
     lost_started, lost_scheduled, last_delay, cancel_requested, max_attempts,
     *_) = row  # fmt: skip
    lost = None
    if lost_worker is not None:
        lost = LostAttempt(lost_worker, lost_started, lost_scheduled)
    return ClaimedTask(task_id, name, payload, attempt, try_number, token, due_at, enqueued_at,
                       now, lost, last_delay, bool(cancel_requested), max_attempts)  # fmt: skip


def _settle_row(s: Settlement) -> tuple[Any, ...]:
    """One settlement as a row of sql.SETTLE's batch: what to store, then its record.

    finished_at, keep_error and keep_last_delay follow the SQLite backend exactly.
    """
    a = s.attempt
    return (
        s.task_id, s.token, str(s.status), s.due_at, int(s.refund_attempt),
        s.now if s.status in TERMINAL else None,
        s.result,
        # a refund that brings no error of its own (a hand-back, a deferral) keeps the last
        s.refund_attempt and s.error_type is None,
        s.error, s.error_type, s.traceback,
        # decorrelated jitter grows from the delay chosen last time: keep it for the next
        s.status is not TaskStatus.RETRYING,
        None if a is None else a.next_delay,
        *(_attempt_row(a) if a is not None else (None,) * 10),
    )  # fmt: skip


def _attempt_row(a: Attempt) -> tuple[Any, ...]:
    return (a.task_name, a.attempt, a.worker_id, a.scheduled_for, a.started_at, a.finished_at,
            a.outcome, a.error_type, a.error_message, a.next_delay)  # fmt: skip


def _rounds(settlements: Sequence[Settlement]) -> list[list[int]]:
    """Positions split so no round settles one task twice (the second must see the first,
    as it would in SQLite, where settlements are applied one after another)."""
    rounds: list[list[int]] = []
    seen: Counter[str] = Counter()
    for position, s in enumerate(settlements):
        index = seen[s.task_id]
        seen[s.task_id] += 1
        if index == len(rounds):
            rounds.append([])
        rounds[index].append(position)
    return rounds


def _task_info(row: Any) -> TaskInfo:
    """A row of TASK_COLUMNS, in order, as a TaskInfo (the status text becomes the enum)."""
    task_id, name, status, *rest, result = row
    # mypy cannot count *rest: the row holds one value per TaskInfo field, result last
    return TaskInfo(task_id, name, TaskStatus(status), *rest, result=result)  # type: ignore[misc]


def _status(value: str | None) -> TaskStatus | None:
    return None if value is None else TaskStatus(value)


def _row_count(status: str) -> int:
    """asyncpg reports "UPDATE 3" / "DELETE 0": the number is the rows changed."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _version(found: str, schema: str) -> int:
    try:
        return int(found)
    except ValueError:
        raise SchemaVersionError(
            f"schema {schema!r} has sitq schema version {found!r}, which is not a number: it "
            "was not written by sitq, or it was damaged. Use another schema name."
        ) from None


def _redacted(dsn: str) -> str:
    """The URL without its password, for messages and logs."""
    return re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", dsn)


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOptionError(f"{name} must be a number of seconds, got {value!r}")
    if not value > 0 or value == float("inf"):
        raise InvalidOptionError(f"{name} must be a finite number of seconds > 0, got {value}")
    return float(value)
