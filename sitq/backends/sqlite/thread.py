"""One connection, one thread, a queue of operations: how work reaches the SQLite file.

`sqlite3` blocks while it works, and an event loop must never block. So each SQLiteBackend
owns one thread, and that thread owns the one `sqlite3` connection. The event loop puts
a request on a queue: an *operation* (a function of `sitq.backends.sqlite.ops`) and its
arguments. The thread runs `operation(connection, *args)` and hands the result (or the
exception) back to the event loop that asked, with `loop.call_soon_threadsafe`.

Group commit: while a trip with writes is out, the writes made meanwhile wait here, on the
event loop's side; when the trip comes back they leave together, in one transaction (one
lock, one commit, one wake-up each way). They wait for one more turn of the loop first: the
callers that trip woke usually write again at once (the next enqueue, the next settle), and
those writes should join the group, not follow it alone. Nothing waits on purpose: a write
made while no trip is out leaves at once, alone. If one write of a group fails (a duplicate
id), the group is rolled back and run again one write at a time, so only the failing write
reports its error (`run_together`).

Short writes on the event loop's own thread: a lone enqueue on an idle connection costs
SQLite tens of microseconds at synchronous=NORMAL (a WAL commit, no fsync), less than the
two thread wake-ups a trip costs. So a write its caller marks short (`write(..., short=True)`)
runs right here, on the event loop, when nothing else could be affected: no trip out or
queued (so nothing issued earlier runs later); no other write (not short) in the last QUIET
seconds (a worker at work beside the caller: its settles and the enqueues leave together,
one transaction for both, which pays more than a hand-off saves); the thread not in a pass
(one lock: only one thread uses the connection at a time); no other short write in this
turn of the loop (the rest of a burst waits for the next turn and leaves as one group). And
SQLite is told not to wait for the write lock: if another connection holds it, SQLite says
so at once and the write goes to the thread after all, where it waits as every write does
(`sitq.backends.sqlite.lock`). Never at synchronous=FULL or EXTRA: there a commit waits for
the disk, which the event loop must not, and the group commit is what pays. For the same
reason SQLite's own checkpoints (which sync the disk, milliseconds) are off while writes run
here: a `Checkpointer`, on a connection and in a thread of its own, runs one every
CHECKPOINT_EVERY of them, and nobody waits for it.

Reads never wait for writes: each is queued at once. A pass of the thread takes everything
queued so far, runs the reads (and a lone write) one by one in the order they came, then a
group of writes, and sends the answers back in one call per event loop.

What this buys:

- A request, once queued, runs whole even if its caller is cancelled (a timeout,
  `worker.stop()`, Ctrl-C): no transaction is left open, no outcome is lost half-way.
- Several event loops (a script calling `asyncio.run()` twice): the connection belongs to
  this thread, not to a loop, so it simply serves the next loop. An answer for a loop that
  has closed meanwhile is dropped (nobody is left to wait for it) and the thread carries on.
  A loop still running elsewhere keeps the backend (`EventLoopError` for the other one):
  the backend's signals wake one loop's waiters.
- The thread is a daemon: a program that never closes its queue still exits (SQLite's
  journal keeps the file whole). `close()` queues a stop *behind* every request already
  sent: those are done first.

The thread was once aiosqlite's, reached through its private `_execute`; this module is
the few dozen lines of it that sitq needs, with nothing private.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from sitq.backends.base import set_failed
from sitq.backends.sqlite import lock, ops
from sitq.backends.sqlite.errors import is_busy
from sitq.errors import EventLoopError, QueueClosedError

#: Writes per group at most: bounds how long one transaction holds the write lock.
MAX_GROUP = 500
#: Short writes done on the event loop between two checkpoints (`Checkpointer`), about the
#: AUTOCHECKPOINT pages of WAL after which SQLite's own runs (back on in the thread).
CHECKPOINT_EVERY, AUTOCHECKPOINT = 200, 1000
#: Seconds since the last write that is not short before a short one may run on the loop.
QUIET = 0.005
#: A request: the operation, its arguments, the future its caller awaits, and whether it
#: writes.
Request = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", bool]
#: An answer: the future, and (True, value) or (False, exception).
Answer = tuple["asyncio.Future[Any]", bool, Any]


class ConnectionThread:
    """One `sqlite3` connection, used only by the one thread this object starts."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop that uses it now
        self.trips = 0  # passes of the thread so far (each: one wake-up there and back)
        self.write_trips = 0  # ... of which wrote (one transaction each): tests count them
        self._requests: queue.SimpleQueue[list[Request]] = queue.SimpleQueue()
        self._out = False  # a trip with writes is out
        self._waiting: list[Request] = []  # writes made meanwhile: they leave together next
        self._closing = False
        self.short_here = False  # short writes may run on the event loop (`allow_short_writes`)
        self.writes_here = 0  # ... how many did: tests count them
        self._conn: sqlite3.Connection | None = None
        self._use = threading.Lock()  # held by whichever thread uses the connection
        self._sent = 0  # requests queued for the thread (written by the event loop only)
        self._served = 0  # ... and served by it (written by the thread only)
        self._outage = False  # the thread waited out an outage not yet made up for
        self._here_mode = False  # SQLite waits for no lock and checkpoints not (short writes)
        self.wal = False  # the file is in WAL mode (not in memory): it needs checkpoints
        self.checkpointer: Checkpointer | None = None  # started at the first one needed
        self._connect: Callable[[], sqlite3.Connection] | None = None
        self._since_checkpoint = 0  # short writes since the last checkpoint was asked for
        self._turn_taken = False  # a short write ran here in this turn of the loop
        self._long_write_at = float("-inf")  # when (loop time) the last write not short came

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread; it opens the connection with `connect()`, then serves."""
        self.loop = asyncio.get_running_loop()
        self._connect = connect
        opened: asyncio.Future[None] = self.loop.create_future()
        thread = threading.Thread(
            target=self._serve, args=(connect, opened), name=self.name, daemon=True
        )
        thread.start()
        await opened

    def allow_short_writes(self, wal: bool) -> None:
        """From now on short writes may run on the event loop (the set-up's writes are
        done: they do not count as a worker at work); `wal`: the file needs checkpoints."""
        self.short_here, self.wal = True, wal
        self._long_write_at = float("-inf")

    def read(self, operation: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Queue `operation(connection, *args)`; await the future for its result."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop or self._closing:
            self._follow(loop)
        future = loop.create_future()
        self._put([(operation, args, future, False)])
        return future

    def write(
        self, operation: Callable[..., Any], *args: Any, short: bool = False
    ) -> asyncio.Future[Any]:
        """Like `read`, for an operation that writes: it leaves at once if no trip with
        writes is out, else with the group that leaves when that trip is back. A `short`
        one may run here and now instead (`_write_here`): the future is then done."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop or self._closing:
            self._follow(loop)
        future = loop.create_future()
        if not short:
            self._long_write_at = loop.time()
        elif self._write_here(loop, operation, args, future):
            return future
        request = (operation, args, future, True)
        if self._out:
            self._waiting.append(request)
        elif short and self._turn_taken:  # a burst: what comes in this turn leaves together
            self._out = True  # at the start of the next one
            self._waiting.append(request)
            loop.call_soon(self._send_waiting)
        else:
            self._out = True
            self._put([request])
        return future

    def _write_here(
        self,
        loop: asyncio.AbstractEventLoop,
        operation: Callable[..., Any],
        args: tuple[Any, ...],
        future: asyncio.Future[Any],
    ) -> bool:
        """Run a short write on the event loop's thread if nothing stands in the way (see
        the module's docstring); False if it must go to the thread. Its outcome is set on
        `future`."""
        idle = not (self._out or self._turn_taken or self._outage or self._sent != self._served)
        quiet = loop.time() - self._long_write_at >= QUIET
        if not (self.short_here and idle and quiet and self._use.acquire(blocking=False)):
            return False
        try:
            conn = self._conn
            if conn is None:  # not open yet, or closed
                return False
            if not self._here_mode:  # the thread sets them back before its next pass
                conn.execute("PRAGMA busy_timeout = 0")
                conn.execute("PRAGMA wal_autocheckpoint = 0")
                self._here_mode = True
            try:
                value = operation(conn, *args)
            except sqlite3.OperationalError as exc:
                if is_busy(exc) and not conn.in_transaction:
                    return False  # another connection writes: the thread waits for it
                set_failed(future, exc)
            except Exception as exc:
                set_failed(future, exc)
            else:
                future.set_result(value)
        finally:
            self._use.release()
        self.writes_here += 1
        self._turn_taken = True  # the next short write in this turn waits for the next one
        loop.call_soon(self._new_turn)
        self._since_checkpoint += 1
        if self._since_checkpoint >= CHECKPOINT_EVERY and self.wal and self._connect:
            self._since_checkpoint = 0
            if self.checkpointer is None:
                self.checkpointer = Checkpointer(self._connect, self.name)
            self.checkpointer.ask()
        return True

    def _new_turn(self) -> None:
        self._turn_taken = False

    def _put(self, requests: list[Request]) -> None:
        self._sent += len(requests)
        self._requests.put(requests)

    async def close(self) -> None:
        """Run every request already made, then close the connection and end the thread.
        (The checkpointer first: the last connection to close folds the WAL away.)"""
        self.wal, checkpointer, self.checkpointer = False, self.checkpointer, None
        if checkpointer is not None:
            await asyncio.to_thread(checkpointer.stop)
        stopped = self.write(_stop)
        self._closing = True
        await stopped

    def _follow(self, loop: asyncio.AbstractEventLoop) -> None:
        """A request from a new event loop: serve it from now on, unless the old one still
        runs (in another thread). The writes the old loop left waiting still leave, now,
        answered on this loop (their callers are gone; the trip that was out may never
        answer here). (Also the one place that refuses a request after `close()`.)"""
        if self._closing:
            raise QueueClosedError(f"the connection of {self.name} is closed")
        if loop is self.loop:
            return
        if self.loop is not None and self.loop.is_running():
            raise EventLoopError(
                f"{self.name} belongs to an event loop that is still running (in another "
                "thread): give each event loop its own backend object (and TaskQueue)"
            )
        self.loop = loop
        self._turn_taken = False  # the old loop may have closed before its turn ended
        self._out = bool(self._waiting)
        if self._waiting:
            left = [(op, args, loop.create_future(), True) for op, args, _, _ in self._waiting]
            self._waiting = []
            self._put(left)

    def _answered(self, answers: list[Answer], wrote: bool) -> None:
        """On the event loop: set each future (a caller that was cancelled no longer waits).
        After a trip with writes, the writes waiting leave one turn later, with those the
        callers woken here make meanwhile."""
        for future, ok, value in answers:
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                set_failed(future, value)
        if wrote:
            if self._waiting:
                asyncio.get_running_loop().call_soon(self._send_waiting)
            else:
                self._out = False

    def _send_waiting(self) -> None:
        group, self._waiting = self._waiting[:MAX_GROUP], self._waiting[MAX_GROUP:]
        self._put(group)  # still out: this group's answer sends what waits next

    # -- in the thread ---------------------------------------------------------------------

    def _serve(
        self, connect: Callable[[], sqlite3.Connection], opened: asyncio.Future[None]
    ) -> None:
        """The thread's whole life: open the connection, then pass after pass, holding the
        connection, until asked to close. (One function on purpose: the work of a pass is
        only `ops` calls, so a task's route through this thread reads ops after ops.)"""
        try:
            conn = connect()
        except BaseException as exc:
            opened.get_loop().call_soon_threadsafe(self._answered, [(opened, False, exc)], False)
            return
        self._conn = conn
        opened.get_loop().call_soon_threadsafe(self._answered, [(opened, True, None)], False)
        while True:
            batch = self._requests.get()  # sleeps until there is work
            with self._use:  # one pass, holding the connection: what is queued so far,
                # reads and lone writes one by one, then the group of writes
                while not self._requests.empty():  # this thread is the only taker
                    batch += self._requests.get_nowait()
                if self._here_mode:  # short writes ran on the loop: back to the thread's ways
                    conn.execute(f"PRAGMA busy_timeout = {lock.SQLITE_BUSY_MS}")
                    conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT}")
                    self._here_mode = False
                self.trips += 1
                alone: list[Request] = []  # reads, and a write with no other beside it
                writes: list[Request] = []
                for request in batch:
                    (writes if request[3] else alone).append(request)
                wrote = bool(writes)
                self.write_trips += wrote
                stop = writes.pop() if writes and writes[-1][0] is _stop else None
                if len(writes) == 1:
                    alone.append(writes.pop())  # its operation makes its own transaction
                answers: list[Answer] = []
                for operation, args, future, _ in alone:
                    try:
                        answers.append((future, True, operation(conn, *args)))
                    except Exception as exc:
                        answers.append((future, False, exc))
                if writes:
                    try:
                        answers += run_together(conn, writes)
                    except Exception as exc:  # not even a ROLLBACK went through
                        answers += [(future, False, exc) for _, _, future, _ in writes]
                if stop is not None:
                    self._conn = None
                    try:
                        conn.close()
                        answers.append((stop[2], True, None))
                    except Exception as exc:
                        answers.append((stop[2], False, exc))
                self._outage = lock.waiting.since is not None
                self._served += len(batch)
            # The answers, one call per event loop. A loop that has closed (its asyncio.run()
            # ended while a request was out) gets none: nobody is left to wait for them.
            loops: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
            for answer in answers:
                loops.setdefault(answer[0].get_loop(), []).append(answer)
            for loop, some in loops.items():
                with suppress(RuntimeError):  # "Event loop is closed"
                    loop.call_soon_threadsafe(self._answered, some, wrote)
            if stop is not None:
                return


def run_together(conn: sqlite3.Connection, writes: list[Request]) -> list[Answer]:
    """Several writes in one transaction: one lock, one commit. If any of them fails, none
    of it is kept and each runs again on its own, so every write gets its own answer. If
    the transaction cannot even begin (the lock stays taken), every write gets that error."""
    try:
        ops.begin(conn)
    except Exception as exc:
        return [(future, False, exc) for _, _, future, _ in writes]
    try:
        answers = [(future, True, op(conn, *args)) for op, args, future, _ in writes]
        conn.execute("COMMIT")
        return answers
    except Exception:
        if conn.in_transaction:  # SQLite ends it by itself on some errors (a full disk)
            conn.execute("ROLLBACK")
    answers = []
    for operation, args, future, _ in writes:
        try:
            answers.append((future, True, operation(conn, *args)))
        except Exception as exc:
            answers.append((future, False, exc))
    return answers


class Checkpointer:
    """Checkpoints for the short writes, on a connection and in a thread of their own: a
    checkpoint moves the WAL's pages into the database file and syncs the disk, which
    takes milliseconds; neither the event loop nor the connection's thread (in whose queue
    the next writes would wait) should wait for it. PASSIVE: it copies what no reader still
    needs and never waits for a lock. A failure is no one's: the next one goes on."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], name: str) -> None:
        self.finished = threading.Event()  # set after each checkpoint: tests wait for it
        self._connect = connect
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"{name}, checkpoints", daemon=True)
        self._thread.start()

    def ask(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        """End the thread (after the checkpoint under way, if any) and its connection."""
        self._stopping = True
        self._wanted.set()
        self._thread.join()

    def _run(self) -> None:
        conn = None
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                with suppress(sqlite3.Error):
                    conn = conn or self._connect()
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self.finished.set()
        finally:
            if conn is not None:
                conn.close()


def _stop(conn: sqlite3.Connection) -> None:
    """The last request (`close()`): the thread closes the connection and ends."""
