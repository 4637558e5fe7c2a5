"""PostgresBackend: one queue shared by workers on many machines, on asyncpg.

Why PostgreSQL: SQLite has one writer, so workers in several processes mostly wait for
each other. PostgreSQL locks rows, not the file: with `FOR UPDATE SKIP LOCKED` each claim
takes rows nobody else holds and never waits for another claim, so workers scale out.
The rules are the same as SQLite's (`sitq.policy.state`), and so are the tables and columns
(the SQL is in `sitq.backends.postgres.sql`).

How it talks to the server:

- a small pool of connections for the operations, and one more connection that LISTENs,
  so a worker waiting for work wakes the moment another process enqueues (NOTIFY);
- each operation is one statement (an atomic transaction by itself) or one explicit
  transaction; batches travel as arrays, so a batch costs one round trip; a busy worker's
  outcomes and its next claim are one statement (`settle_and_claim`): one trip, one commit;
- a cancelled caller (a timeout, `worker.stop()`, Ctrl-C) leaves no transaction open and
  no lock held: asyncpg asks the server to cancel the statement and the pool rolls the
  connection back before anyone else uses it;
- a lost connection (a server restart, `pg_terminate_backend`) is not an error for long:
  the operation runs again on a fresh connection until `reconnect_timeout`. That is safe
  because every operation can run twice: the fencing token refuses a second settle (and
  the first is recognised), a second enqueue is not done if the first one committed, and
  a claim whose answer was lost leaves its tasks to be taken over when their lease ends.

Whose clock: workers on several machines never quite agree on the time, and a lease
measured on each claimer's own clock is taken over early by a worker whose clock is ahead
(60 s ahead took every live lease; 8 days ahead pruned results seconds old). So when a
worker runs on real time (a `SystemClock`), lease expiry, renewal, the takeover check and
retention are measured on the *server's* clock, in the statements themselves. A worker on
a `FakeClock` (tests, lessons) passes its virtual time instead: nothing but its owner can
move that, and a test must be able to expire a lease by `clock.advance(...)`. Task times
shown to people (enqueued, started, finished, due) stay on the worker's own clock.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import Any

import asyncpg

from sitq.backends.base import (
    NewTask,
    Now,
    read_now,
)
from sitq.backends.postgres import deps, limits, sql
from sitq.backends.postgres import rows as convert
from sitq.backends.postgres import schedules as schedule_sql
from sitq.backends.postgres.claims import ClaimsAndSettles, lease_clock
from sitq.backends.postgres.link import Connection
from sitq.backends.schedule_rows import NewSchedule, ScheduleFire
from sitq.overview import ScheduleInfo
from sitq.policy.rate_limits import RateLimit
from sitq.policy.state import CancelAction, on_cancel, on_requeue
from sitq.task import Attempt, TaskInfo, TaskStatus

logger: logging.Logger = logging.getLogger("sitq.backends.postgres")


class PostgresBackend(ClaimsAndSettles):
    """A queue stored in PostgreSQL, in its own schema (default "sitq") of any database.

    dsn: a libpq URL, e.g. "postgresql://user@host:5432/db". schema: where sitq keeps its
    tables, so several queues (or other applications) can share a database. pool_size:
    the most connections operations use at once (a worker needs about four: claim,
    settle, heartbeat, progress), plus one that listens for notifications.
    reconnect_timeout: how long an operation keeps trying when the connection is lost.
    create: make sitq's schema and tables if they are missing (the default); with False a
    schema holding no queue raises QueueNotFoundError at connect.
    """

    # -- writing -------------------------------------------------------------------------

    async def add_tasks(self, tasks: Sequence[NewTask]) -> None:
        if not tasks:
            return
        columns = [list(column) for column in zip(*map(convert.task_row, tasks), strict=True)]
        ids = columns[0]

        async def add(conn: Connection) -> None:
            await conn.execute(sql.ADD_TASKS, *columns, self._channel, self._me)

        async def added_already(conn: Connection) -> bool | None:
            # All or nothing: if the first id is there, the lost attempt committed.
            return True if await conn.fetch(sql.EXISTING_IDS, ids[:1]) else None

        await self._run(add, again=added_already)
        self.work_signal.ring()

    async def add_dependent_tasks(
        self, tasks: Sequence[NewTask], parents: Sequence[tuple[str, ...]]
    ) -> None:
        """`DependencyStore.add_dependent_tasks` (`sitq.backends.postgres.deps`)."""
        if not tasks:
            return
        ids = [task.task_id for task in tasks]

        async def add(conn: Connection) -> None:
            async with conn.transaction():
                await deps.add_dependent_tasks(conn, tasks, parents)
                await self._notify_work(conn)

        async def added_already(conn: Connection) -> bool | None:
            return True if await conn.fetch(sql.EXISTING_IDS, ids[:1]) else None

        await self._run(add, again=added_already)
        self.work_signal.ring()
        self.settle_signal.ring()  # a child cancelled at once for its parent is finished

    async def parents_of(self, task_id: str) -> list[str]:
        return [row[0] for row in await self._fetch(deps.PARENT_IDS, task_id)]

    async def add_unique_tasks(self, tasks: Sequence[NewTask]) -> list[str]:
        """One transaction (see `postgres.limits`), run again whole if the connection is
        lost or it met a deadlock: rows inserted before stand in their own place."""

        async def add(conn: Connection) -> list[str]:
            async with conn.transaction():
                ids, added = await limits.add_unique_tasks(conn, tasks)
                if added:
                    await self._notify_work(conn)
            return ids

        if not tasks:
            return []
        ids = await self._run(lambda conn: limits.again_on_conflict(add, conn))
        self.work_signal.ring()
        return ids

    async def take_rate_slot(
        self, name: str, limit: int, period: float, now: Now, task_id: str
    ) -> float | None:
        key = limits.turn_key(self.schema, name)
        at = lease_clock(now, read_now(now))
        rule = RateLimit(limit, period)
        return await self._run(
            lambda conn: limits.take_rate_slot(conn, key, name, rule, at, task_id)
        )

    async def set_progress(self, task_id: str, token: int, progress: float, message: str) -> None:
        await self._execute(sql.SET_PROGRESS, progress, message, task_id, token)

    async def cancel(self, task_id: str, now: float) -> TaskStatus | None:
        async def cancel(conn: Connection) -> TaskStatus | None:
            async with conn.transaction():
                old = convert.status(await conn.fetchval(sql.STATUS_FOR_UPDATE, task_id))
                action = on_cancel(old)
                if action is CancelAction.CANCEL_NOW:
                    await conn.execute(sql.CANCEL_NOW, now, task_id)
                    await deps.follow(conn, [task_id], now)
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
                old, new, parents = await limits.requeue_decision(conn, task_id, now)
                if new is not None:
                    await conn.execute(sql.REQUEUE, str(new), now, task_id)
                    await deps.follow(conn, [task_id], now)  # its children wait again
                    await self._notify_work(conn)
                elif old is not None and parents is not None:  # still cancelled: say why
                    await deps.store(conn, task_id, old, parents, now)
            return old

        old = await self._run(lambda conn: limits.again_on_conflict(requeue, conn))
        if on_requeue(old) is not None:
            self.work_signal.ring()
        return old

    async def purge(self, statuses: Collection[TaskStatus]) -> int:
        names = [str(s) for s in statuses]
        return await self._execute(sql.PURGE, names) if names else 0

    async def prune(self, older_than: float, now: Now, limit: int) -> int:
        rows = await self._fetch(sql.PRUNE, older_than, limit, lease_clock(now, read_now(now)))
        return int(rows[0][0])

    # -- reading -------------------------------------------------------------------------

    async def next_due_at(self) -> float | None:
        """What the last claim saw, if it came back short and nothing has run since (see
        `_keep_next_due`): a worker that found too little asks this next. Else a query."""
        if self._next_due is not None:
            (next_due,), self._next_due = self._next_due, None
            return next_due
        rows = await self._fetch(sql.NEXT_DUE)
        return rows[0][0] if rows else None

    async def get_tasks(self, task_ids: Collection[str]) -> dict[str, TaskInfo]:
        ids = list(task_ids)
        if not ids:
            return {}
        return {row[0]: convert.task_info(row) for row in await self._fetch(convert.GET_TASKS, ids)}

    async def list_tasks(
        self, statuses: Collection[TaskStatus] | None = None, limit: int | None = None
    ) -> list[TaskInfo]:
        params: list[Any]  # the statuses (a text[]), then the limit
        query, params = convert.LIST_TASKS, []
        if statuses is not None:
            params.append([str(s) for s in statuses])
            query += " WHERE status = ANY($1::text[])"
        query += " ORDER BY seq"
        if limit is not None:
            params.append(int(limit))
            query += f" LIMIT ${len(params)}"
        return [convert.task_info(row) for row in await self._fetch(query, *params)]

    async def counts(self) -> dict[TaskStatus, int]:
        found = {TaskStatus(status): n for status, n in await self._fetch(sql.COUNTS)}
        return {status: found.get(status, 0) for status in TaskStatus}

    async def attempts(self, task_id: str | None = None) -> list[Attempt]:
        if task_id is None:
            rows = await self._fetch(convert.LIST_ATTEMPTS + " ORDER BY seq")
        else:
            rows = await self._fetch(convert.LIST_ATTEMPTS + " WHERE task_id = $1 ORDER BY seq",
                                     task_id)  # fmt: skip
        return [Attempt(*row) for row in rows]

    async def newest_attempts(self, limit: int) -> list[Attempt]:
        rows = await self._fetch(convert.LIST_ATTEMPTS + " ORDER BY seq DESC LIMIT $1", int(limit))
        return [Attempt(*row) for row in rows]

    # -- periodic tasks (sitq.backends.postgres.schedules) ----------------------------------

    async def save_schedule(self, schedule: NewSchedule) -> ScheduleInfo:
        [row] = await self._fetch(schedule_sql.SAVE_SCHEDULE, *schedule)
        return ScheduleInfo(*row)

    async def delete_schedule(self, name: str) -> bool:
        return await self._execute(schedule_sql.DELETE_SCHEDULE, name) == 1

    async def list_schedules(self) -> list[ScheduleInfo]:
        try:
            rows = await self._fetch(schedule_sql.LIST_SCHEDULES)
        except asyncpg.exceptions.UndefinedTableError:
            return []  # a schema made before schedules existed, not yet upgraded
        return [ScheduleInfo(*row) for row in rows]

    async def fire_schedule(self, fire: ScheduleFire) -> bool:
        """One transaction: advance (compare-and-set), record the tick, add the task and
        NOTIFY the listening workers (see `sitq.backends.postgres.schedules`)."""

        async def fire_once(conn: Connection) -> bool:
            async with conn.transaction():
                advanced = await conn.execute(schedule_sql.ADVANCE, fire.next_at, fire.error,
                                              fire.name, fire.expected_next_at)  # fmt: skip
                task = fire.task
                if convert.row_count(advanced) != 1 or task is None or fire.tick_at is None:
                    return False
                recorded = await conn.execute(schedule_sql.RECORD_TICK, fire.name, fire.tick_at,
                                              task.task_id, fire.now)  # fmt: skip
                if convert.row_count(recorded) != 1:
                    return False
                columns = [[value] for value in convert.task_row(task)]
                await conn.execute(sql.ADD_TASKS, *columns, self._channel, self._me)
                await conn.execute(schedule_sql.LAST_TICK, fire.tick_at, task.task_id, fire.name)
                await conn.execute(schedule_sql.FORGET_OLD_TICKS, fire.name,
                                   schedule_sql.TICKS_KEPT - 1)  # fmt: skip
            return True

        async def fired_already(conn: Connection) -> bool | None:
            # A lost COMMIT: if the tick is recorded with our task, it went through.
            if fire.task is None:
                return None
            found = await conn.fetch(sql.EXISTING_IDS, [fire.task.task_id])
            return True if found else None

        added = await self._run(fire_once, again=fired_already)
        if added:
            self.work_signal.ring()
        return added
