"""How PostgresBackend talks to the server: a pool, a LISTEN connection, and operations
that run again when the connection is lost. The queue's operations are in `postgres.py`.

- a small pool of connections for the operations, and one more connection that LISTENs,
  so a worker waiting for work wakes the moment another process enqueues (NOTIFY);
- a cancelled caller (a timeout, `worker.stop()`, Ctrl-C) leaves no transaction open and
  no lock held: asyncpg asks the server to cancel the statement and the pool rolls the
  connection back before anyone else uses it;
- a lost connection (a server restart, `pg_terminate_backend`) is not an error for long:
  the operation runs again on a fresh connection until `reconnect_timeout`;
- one backend object across several event loops (`asyncio.run()` called again): the pool
  follows the new loop (`sitq.backends.postgres.loops`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, TypeAlias, TypeVar

import asyncpg

from sitq.backends.base import (
    Connectable,
    Signal,
)
from sitq.backends.postgres import deps, limits, sql
from sitq.backends.postgres import rows as convert
from sitq.backends.postgres.loops import LoopOwner
from sitq.backends.urls import redacted, require_encoded_password, scrubbed
from sitq.errors import (
    BackendError,
    InvalidOptionError,
    QueueClosedError,
    QueueNotFoundError,
    SchemaVersionError,
)
from sitq.options import seconds_setting

logger: logging.Logger = logging.getLogger("sitq.backends.postgres")
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


class PostgresLink(Connectable):
    """The connection side of PostgresBackend (see the module docstring); it creates and
    checks sitq's schema when it connects. `create=False`: a schema with no sitq queue
    in it is an error (QueueNotFoundError), not made: a typo'd `?schema=` must not start
    an empty queue that reports zeros (the CLI opens this way unless `--create`)."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "sitq",
        pool_size: int = 4,
        poll_interval: float = 0.5,
        connect_timeout: float = 10.0,
        reconnect_timeout: float = 30.0,
        create: bool = True,
    ) -> None:
        if not isinstance(dsn, str) or not dsn.lower().startswith(("postgresql://", "postgres://")):
            shown = redacted(dsn) if isinstance(dsn, str) else repr(dsn)
            raise InvalidOptionError(
                f"dsn must be a postgresql:// URL, e.g. postgresql://user@host:5432/db; got {shown}"
            )
        require_encoded_password(dsn)
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
        self.create = bool(create)
        self.poll_interval: float = seconds_setting("poll_interval", poll_interval)
        self.connect_timeout: float = seconds_setting("connect_timeout", connect_timeout)
        self.reconnect_timeout: float = seconds_setting("reconnect_timeout", reconnect_timeout)
        #: Shown in pg_stat_activity, so an administrator sees whose sessions these are.
        self.application_name: str = f"sitq:{schema}"
        self.work_signal: Signal = Signal()
        self.settle_signal: Signal = Signal()
        self._remote_change = Signal()  # rung by NOTIFYs from other backends
        self._channel = f"sitq_work.{schema}"
        self._me = uuid.uuid4().hex  # our own NOTIFYs carry this: we ignore their echo
        self._pool: asyncpg.Pool | None = None
        self._listener: Connection | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._users = 0
        self._next_due: tuple[float | None] | None = None  # see `claims._keep_next_due`
        self._changing = 0  # operations under way that may make a task due
        self._changed = 0  # such operations finished so far
        self._opening = asyncio.Lock()
        self._owner = LoopOwner(repr(self), self._move)

    def __repr__(self) -> str:
        return f"PostgresBackend({redacted(self.dsn)!r}, schema={self.schema!r})"

    # -- opening and closing -------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._pool is not None

    async def connect(self) -> None:
        self._users += 1
        try:
            if self._pool is not None:
                await self._owner.follow()
            async with self._opening:
                if self._pool is None:
                    self._pool = await self._open_pool()
                    await self._listen()
                    self._owner.loop = asyncio.get_running_loop()
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
                self.dsn, min_size=1, max_size=self.pool_size, reset=_keep_session,
                **self._connect_options(),
            )  # fmt: skip
        except (*CONNECTION_LOST, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError,
                ValueError) as exc:  # fmt: skip
            if isinstance(exc, asyncpg.InvalidCatalogNameError):
                raise QueueNotFoundError(
                    f"cannot connect to {redacted(self.dsn)}: {scrubbed(str(exc), self.dsn)}; "
                    "check the database name in the URL, or create the database first "
                    "(createdb NAME): sitq creates its schema, never a database"
                ) from None
            raise BackendError(
                f"cannot connect to {redacted(self.dsn)}: "
                f"{type(exc).__name__}: {scrubbed(str(exc), self.dsn)}"
            ) from None  # the driver's own error may quote the URL
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
        version = await self._stored_version(conn)
        if version == sql.SCHEMA_VERSION:
            return
        if version is None and not self.create:
            raise QueueNotFoundError(
                f"no sitq queue in schema {self.schema!r} of {redacted(self.dsn)}: check "
                "the schema name (the URL's ?schema=, 'sitq' if none), or open it with "
                "create=True to make one",
                schema=self.schema,
            )
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
                await conn.execute(limits.SCHEMA)
                await conn.execute(deps.SCHEMA)
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
        version = convert.version(found, self.schema)
        if version > sql.SCHEMA_VERSION:
            raise SchemaVersionError(
                f"schema {self.schema!r} has sitq schema version {found}, but this sitq "
                f"knows version {sql.SCHEMA_VERSION} at most: upgrade sitq to use it"
            )
        return version

    async def _move(self) -> None:
        """On a new event loop (`sitq.backends.postgres.loops`): the pool and the listening
        connection belong to the old one, so drop them and open new ones here."""
        self._drop()
        self._opening = asyncio.Lock()
        self._pool = await self._open_pool()
        await self._listen()

    def _drop(self) -> None:
        """Forget the connections of a loop that has gone, with no goodbye but the one
        `terminate()` sends at once (the server ends those sessions); what needs the old
        loop fails with "Event loop is closed", and the sockets go when collected."""
        pool, listener, self._pool, self._listener = self._pool, self._listener, None, None
        self._relisten = None
        for old in (pool, listener):
            if old is not None:
                with suppress(RuntimeError):
                    old.terminate()

    async def _shut(self) -> None:
        if self._owner.loop not in (None, asyncio.get_running_loop()):
            self._drop()  # closed from a new event loop: the old one cannot run a goodbye
            return
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
            self._next_due = None
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
            self._next_due = None
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
        makes_due: bool = True,
    ) -> T:
        """Run `operation(connection)` on a pooled connection; if the connection is lost,
        run it again on a new one until `reconnect_timeout`. `again`, if given, runs first
        on a retry: when it returns a value, the lost attempt had in fact committed.

        A cancelled caller is safe: asyncpg asks the server to cancel the statement, and
        the pool rolls the connection back before anyone else gets it.

        `makes_due=False`: it never makes a task due (a claim, a read), so what a claim
        saw next due still holds after it (`claims._keep_next_due`)."""
        if not makes_due:
            return await self._run_again(operation, again)
        self._next_due = None
        self._changing += 1
        try:
            return await self._run_again(operation, again)
        finally:
            self._changing -= 1
            self._changed += 1

    async def _run_again(
        self,
        operation: Callable[[Connection], Awaitable[T]],
        again: Callable[[Connection], Awaitable[T | None]] | None,
    ) -> T:
        deadline = time.monotonic() + self.reconnect_timeout
        pause = RETRY_FIRST_PAUSE
        retrying = False
        while True:
            await self._owner.follow()
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
                        f"lost the connection to {redacted(self.dsn)} and could not get it "
                        f"back within {self.reconnect_timeout:g}s: {scrubbed(str(exc), self.dsn)}"
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
        """Run one statement that makes no task due (a read, a delete); return its rows."""
        return await self._run(lambda conn: conn.fetch(statement, *args), makes_due=False)

    async def _execute(self, statement: str, *args: Any) -> int:
        """Run one statement (atomic by itself); return how many rows it changed."""
        status = await self._run(lambda conn: conn.execute(statement, *args), makes_due=False)
        return convert.row_count(status)

    async def _notify_work(self, conn: Connection) -> None:
        await conn.execute(sql.NOTIFY, self._channel, self._me)


# -- helpers ------------------------------------------------------------------------------


async def _keep_session(_conn: Connection) -> None:
    """A connection given back to the pool: asyncpg rolls back a transaction left open (a
    cancelled caller's), and that is all it needs. Its default reset is one more round trip
    after every operation (advisory unlocks, CLOSE ALL, UNLISTEN *, RESET ALL) for session
    state sitq never leaves: settings are fixed at connect, advisory locks are taken for a
    transaction (the schema set-up's is unlocked before the pool is used, or the pool
    ends), and only the separate listening connection LISTENs."""


async def _release(pool: asyncpg.Pool, conn: Connection) -> None:
    """Give a connection back. The pool resets it first; if the server has just ended the
    session, that fails and the pool drops it. The operation's result stands either way
    (it committed): losing it here would strand claimed tasks or settled outcomes."""
    try:
        await pool.release(conn)
    except (*CONNECTION_LOST, asyncpg.exceptions.InternalClientError) as exc:
        logger.info("a connection ended as it was given back to the pool (%s)", exc)
