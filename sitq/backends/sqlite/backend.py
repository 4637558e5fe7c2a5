"""SQLiteBackend: a durable queue in one file (or in memory).

Why SQLite: it ships with Python, a file in WAL mode lets many readers work beside one
writer, and every claim is one atomic transaction, so two workers (even in two processes)
can never take the same task. The SQL itself is in `sitq.backends.sqlite.sql`.

How it talks to the file: one connection in one thread of its own
(`sitq.backends.sqlite.thread`), handed one operation at a time (`sitq.backends.sqlite.ops`).
Every operation is *one* function that opens the transaction, does all its statements and
commits or rolls back before returning. So:

- one round trip per operation (a thread wake-up costs more than most statements), and
  writes queued while a trip is out share the next one, in one transaction (group
  commit): an enqueue and a worker's settle travel together;
- a cancelled caller (a timeout, `worker.stop()`, Ctrl-C) can never leave a transaction
  open or the write lock held: the function still finishes in the thread;
- `now` is read inside the transaction, after the write lock is held, so a wait for the
  lock never eats into a lease.

One exception to the trip: a lone enqueue on an idle connection, at synchronous=NORMAL or
OFF, is written on the event loop's own thread (a commit there costs less than the two
wake-ups of a trip); the thread's module says when, and how it steps aside."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Callable, Collection, Sequence
from typing import Any, TypeVar

from sitq.backends.base import (
    ClaimedTask,
    ClaimRequest,
    Connectable,
    NewTask,
    Now,
    Settlement,
    Signal,
)
from sitq.backends.columns import ATTEMPT_COLUMNS, TASK_COLUMNS
from sitq.backends.schedule_rows import NewSchedule, ScheduleFire
from sitq.backends.sqlite import counting, deps, limits, ops, schema, sql
from sitq.backends.sqlite import lock as sqlite_lock
from sitq.backends.sqlite import schedules as schedule_ops
from sitq.backends.sqlite.errors import named
from sitq.backends.sqlite.thread import ConnectionThread
from sitq.backends.sqlite.watch import CommitWatch
from sitq.backends.urls import sqlite_path
from sitq.errors import BackendError, InvalidOptionError, QueueClosedError
from sitq.options import seconds_setting
from sitq.overview import ScheduleInfo
from sitq.policy.state import CancelAction, on_cancel, on_requeue
from sitq.task import WAITING, Attempt, TaskInfo, TaskStatus

logger: logging.Logger = logging.getLogger("sitq.backends.sqlite")
T = TypeVar("T")
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
#: The durability levels at which a short write may run on the event loop's own thread
#: (`sitq.backends.sqlite.thread`): a commit there waits for no disk.
SHORT_WRITES_HERE = ("OFF", "NORMAL")
#: Rows an enqueue may have and still be a short write.
SHORT_INSERT = 10
#: Idle waiters look for other connections' commits this often at first, then less, up to the cap.
CHANGE_POLL_FIRST, CHANGE_POLL_CAP = 0.001, 0.02


class SQLiteBackend(Connectable):
    """A queue stored in one SQLite file in WAL mode, or in memory with `":memory:"`.

    One backend object holds one connection. Queue and worker can share it (as in the
    tutorial), and then a worker wakes the moment a task is enqueued. Workers in other
    processes open their own backend on the same file and notice new work within a few
    milliseconds (`sqlite.watch`), with `poll_interval` as the longest look-away.
    `read_only=True` reads an existing file and writes nothing, not even the schema.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "sitq.db",
        *,
        busy_timeout: float = 30.0,
        poll_interval: float = 0.5,
        synchronous: str = "NORMAL",
        read_only: bool = False,
    ) -> None:
        self.path: str = sqlite_path(
            os.fspath(path)
        )  # a sqlite:/// or sqlite+aiosqlite:/// URL too
        if not isinstance(self.path, str):
            raise InvalidOptionError(f"path must be a str or path, got {path!r}")
        self.busy_timeout: float = seconds_setting("busy_timeout", busy_timeout, allow_zero=True)
        self.poll_interval: float = seconds_setting("poll_interval", poll_interval)
        if not isinstance(synchronous, str) or synchronous.upper() not in SYNCHRONOUS_MODES:
            raise InvalidOptionError(
                f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)} (SQLite's "
                f"durability levels; sitq uses NORMAL in WAL mode), got {synchronous!r}"
            )
        self.synchronous: str = synchronous.upper()
        self.read_only: bool = bool(read_only)
        self.work_signal: Signal = Signal()
        self.settle_signal: Signal = Signal()
        self._thread: ConnectionThread | None = None  # set while connected
        self._watch: CommitWatch | None = None  # set once the file is open in WAL mode
        self._users = 0
        self._data_version: int | None = None

    def __repr__(self) -> str:
        return f"SQLiteBackend({self.path!r})"

    # -- opening and closing -------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._thread is not None

    @property
    def is_memory(self) -> bool:
        return self.path == ":memory:" or "mode=memory" in self.path

    async def connect(self) -> None:
        self._users += 1
        if self._thread is not None:
            return
        try:
            self._thread = await self._open()
        except BaseException:
            self._users -= 1
            raise
        if not self.is_memory and not _is_uri(self.path):
            self._watch = CommitWatch(self.path)

    async def _open(self) -> ConnectionThread:
        target = schema.prepare_file(self.path, self.is_memory, self.read_only)

        def connect() -> sqlite3.Connection:  # runs in the connection's thread
            # used by one thread at a time, not always this one (`thread`: short writes)
            return sqlite3.connect(target, isolation_level=None, timeout=self.busy_timeout,
                                   uri=_is_uri(target), check_same_thread=False)  # fmt: skip

        thread = ConnectionThread(repr(self))
        try:
            await thread.open(connect)
        except (OSError, sqlite3.Error) as exc:
            raise BackendError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            await thread.write(schema.set_up, self.path, self.is_memory, self.synchronous,
                               self.busy_timeout, self.read_only)  # fmt: skip
            await thread.write(sqlite_lock.wait_for_lock_up_to, self.busy_timeout)
        except BaseException:
            await thread.close()
            raise
        # a commit that waits for the disk (FULL, EXTRA) never runs on the event loop
        if self.synchronous in SHORT_WRITES_HERE and not self.read_only:
            thread.allow_short_writes(wal=not self.is_memory)
        return thread

    async def close(self) -> None:
        """The last close sends the writes still queued (they are kept, not dropped), then
        ends the connection's thread."""
        if self._users > 0:
            self._users -= 1
        if self._users == 0 and self._thread is not None:
            if self._watch is not None:  # before the connection: see `watch`
                self._watch.close()
                self._watch = None
            thread, self._thread = self._thread, None
            await thread.close()

    # -- the one way in: a whole operation in the connection's thread ---------------------

    async def _run(self, operation: Callable[..., T], *args: Any) -> T:
        """Run `operation(sqlite3_connection, *args)` in the connection's thread: one trip."""
        if self._thread is None:
            raise self._not_connected()
        try:
            result: T = await self._thread.read(operation, *args)
        except sqlite3.DatabaseError as exc:  # named: `sqlite.errors`
            raise named(exc, self.path, self.busy_timeout)  # noqa: B904 (it sets the cause)
        return result

    async def _write(self, operation: Callable[..., T], *args: Any, short: bool = False) -> T:
        """Run a write operation like `_run`, in one transaction with the writes queued
        beside it (group commit, `sitq.backends.sqlite.thread`); a `short` one perhaps
        here, on the event loop's thread, if the connection is idle."""
        if self._thread is None:
            raise self._not_connected()
        try:
            future = self._thread.write(operation, *args, short=short)
            if future.done():  # done here: the loop still turns once, as after a trip, so
                await asyncio.sleep(0)  # a caller writing in a loop lets the others run
            result: T = await future
        except sqlite3.DatabaseError as exc:
            raise named(exc, self.path, self.busy_timeout)  # noqa: B904 (it sets the cause)
        return result

    def _not_connected(self) -> QueueClosedError:
        return QueueClosedError(
            f"{self!r} is not connected: call `await queue.connect()` (or use "
            "`async with queue:`) before using it, and not after `close()`"
        )

    async def _fetch(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self._run(ops.fetchall, statement, params)

    # -- writing -------------------------------------------------------------------------

    async def add_tasks(self, tasks: Sequence[NewTask]) -> None:
        if not tasks:
            return
        rows = list(tasks)  # NewTask is a tuple in INSERT_TASK order
        await self._write(ops.add_tasks, rows, short=len(rows) <= SHORT_INSERT)
        if self.work_signal.listened:  # a worker waits for work (most enqueues find none)
            self.work_signal.ring()

    async def add_dependent_tasks(
        self, tasks: Sequence[NewTask], parents: Sequence[tuple[str, ...]]
    ) -> None:
        """`DependencyStore.add_dependent_tasks` (`sitq.backends.sqlite.deps`)."""
        if tasks:
            await self._write(ops.add_dependent_tasks, list(tasks), list(parents))
            self.work_signal.ring()
            self.settle_signal.ring()  # a child cancelled at once for its parent is finished

    async def parents_of(self, task_id: str) -> list[str]:
        return [row[0] for row in await self._fetch(deps.PARENT_IDS, (task_id,))]

    async def add_unique_tasks(self, tasks: Sequence[NewTask]) -> list[str]:
        ids = await self._write(limits.add_unique_tasks, list(tasks)) if tasks else []
        self.work_signal.ring()
        return ids

    async def take_rate_slot(
        self, name: str, limit: int, period: float, now: Now, task_id: str
    ) -> float | None:
        return await self._write(limits.take_rate_slot, name, limit, period, now, task_id)

    async def claim(
        self,
        worker_id: str,
        limit: int,
        now: Now,
        lease_seconds: float,
        *,
        held: Collection[str] = (),
        default_budget: tuple[int, str] | None = None,
        ahead: int = 0,
        started: Sequence[tuple[str, int, float]] = (),
    ) -> list[ClaimedTask]:
        # `held` and `started` are copied now: the caller may change them meanwhile
        return await self._write(ops.claim, worker_id, limit, now, lease_seconds, list(held),
                                 default_budget, ahead, list(started))  # fmt: skip

    async def settle(self, settlements: Sequence[Settlement]) -> list[bool]:
        if not settlements:
            return []
        accepted, _ = await self._settle_and_claim(list(settlements))
        return accepted

    async def settle_and_claim(
        self, settlements: Sequence[Settlement], claim: ClaimRequest
    ) -> tuple[list[bool], list[ClaimedTask]]:
        c = claim
        return await self._settle_and_claim(list(settlements), c.worker_id, c.limit, c.now,
                                             c.lease_seconds, list(c.held), c.default_budget,
                                             c.ahead, list(c.started))  # fmt: skip

    async def _settle_and_claim(
        self, settlements: list[Settlement], *claim: Any
    ) -> tuple[list[bool], list[ClaimedTask]]:
        """Store the outcomes (and claim, given a claim's arguments), then ring: the work
        signal if a task went back to waiting, the settle signal for any result waiter."""
        accepted, claimed = await self._write(ops.settle_and_claim, settlements, *claim)
        for settlement, ok in zip(settlements, accepted, strict=True):
            if ok and settlement.status in WAITING:
                self.work_signal.ring()
                break
        if self.settle_signal.listened:  # someone waits for a result (a busy worker's
            self.settle_signal.ring()  # settles mostly find nobody)
        return accepted, claimed

    async def renew_leases(
        self, leases: Sequence[tuple[str, int]], now: Now, lease_seconds: float
    ) -> set[str]:
        if not leases:
            return set()
        return await self._write(ops.renew, list(leases), now, lease_seconds)

    async def set_progress(self, task_id: str, token: int, progress: float, message: str) -> None:
        await self._write(
            ops.write,
            "UPDATE sitq_tasks SET progress = ?, progress_message = ? "
            "WHERE id = ? AND lease_token = ? AND status = 'running'",
            (progress, message, task_id, token),
        )

    async def cancel(self, task_id: str, now: float) -> TaskStatus | None:
        old = await self._write(ops.cancel, task_id, now)
        if on_cancel(old) is CancelAction.CANCEL_NOW:
            self.settle_signal.ring()
        return old

    async def requeue(self, task_id: str, now: float) -> TaskStatus | None:
        old = await self._write(ops.requeue, task_id, now)
        if on_requeue(old) is not None:
            self.work_signal.ring()
        return old

    async def purge(self, statuses: Collection[TaskStatus]) -> int:
        names = [str(s) for s in statuses]
        if not names:
            return 0
        marks = ", ".join("?" for _ in names)
        return await self._write(
            ops.write, f"DELETE FROM sitq_tasks WHERE status IN ({marks})", names
        )

    async def prune(self, older_than: float, now: Now, limit: int) -> int:
        return await self._write(ops.prune, older_than, now, limit)

    # -- reading -------------------------------------------------------------------------

    async def next_due_at(self) -> float | None:
        rows = await self._fetch(sql.NEXT_DUE)
        return rows[0][0] if rows else None

    async def wait_for_change(self, timeout: float | None) -> None:
        """Wait until another connection commits (or `timeout` passes), looking after 1 ms,
        then backing off to every 20 ms.

        A look reads the WAL-index header from the `-shm` file (`sqlite.watch`: a memory
        read, no trip); without one (in memory) it asks `PRAGMA data_version`, a trip. The
        first look waits a moment too: a waiter in this process is usually woken by the
        in-process signal first.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        watch = self._watch if self._watch is not None and self._watch.open() else None
        pause = 0.0 if watch is None and self._data_version is None else CHANGE_POLL_FIRST
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            await asyncio.sleep(pause if remaining is None else min(pause, remaining))
            changed = watch.changed() if watch is not None else await self._data_version_moved()
            if changed:
                return
            pause = min(max(pause * 2, CHANGE_POLL_FIRST), CHANGE_POLL_CAP)

    async def _data_version_moved(self) -> bool:
        """`PRAGMA data_version` moves when another connection commits (a trip to ask)."""
        version = (await self._fetch("PRAGMA data_version"))[0][0]
        moved = self._data_version is not None and version != self._data_version
        self._data_version = version
        return moved

    async def get_tasks(self, task_ids: Collection[str]) -> dict[str, TaskInfo]:
        return await self._run(ops.get_tasks, list(task_ids))

    async def list_tasks(
        self, statuses: Collection[TaskStatus] | None = None, limit: int | None = None
    ) -> list[TaskInfo]:
        query = f"SELECT {TASK_COLUMNS} FROM sitq_tasks"
        params: list[Any] = []
        if statuses is not None:
            params = [str(s) for s in statuses]
            query += f" WHERE status IN ({', '.join('?' for _ in params)})"
        query += " ORDER BY seq"
        if limit is not None:
            query += " LIMIT ?"
            params.append(int(limit))
        return await self._run(ops.list_tasks, query, params)

    async def counts(self) -> dict[TaskStatus, int]:
        return await self._run(counting.read)

    async def attempts(self, task_id: str | None = None) -> list[Attempt]:
        query = f"SELECT {ATTEMPT_COLUMNS} FROM sitq_attempts"
        params: tuple[Any, ...] = ()
        if task_id is not None:
            query += " WHERE task_id = ?"
            params = (task_id,)
        return await self._run(ops.attempts, query + " ORDER BY seq", params)

    async def newest_attempts(self, limit: int) -> list[Attempt]:
        return await self._run(ops.attempts, sql.NEWEST_ATTEMPTS, (int(limit),))

    # -- periodic tasks (sitq.backends.sqlite.schedules) ------------------------------------

    async def save_schedule(self, schedule: NewSchedule) -> ScheduleInfo:
        return await self._write(schedule_ops.save, schedule)

    async def delete_schedule(self, name: str) -> bool:
        return await self._write(schedule_ops.delete, name)

    async def list_schedules(self) -> list[ScheduleInfo]:
        return await self._run(schedule_ops.list_all)

    async def fire_schedule(self, fire: ScheduleFire) -> bool:
        added = await self._write(schedule_ops.fire, fire)
        if added:
            self.work_signal.ring()
        return added


def _is_uri(path: str) -> bool:
    return path.startswith("file:")
