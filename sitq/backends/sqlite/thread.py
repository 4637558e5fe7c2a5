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
from sitq.backends.sqlite import ops
from sitq.errors import EventLoopError, QueueClosedError

#: Writes per group at most: bounds how long one transaction holds the write lock.
MAX_GROUP = 500
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

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        """Start the thread; it opens the connection with `connect()`, then serves."""
        self.loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = self.loop.create_future()
        thread = threading.Thread(
            target=self._serve, args=(connect, opened), name=self.name, daemon=True
        )
        thread.start()
        await opened

    def read(self, operation: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Queue `operation(connection, *args)`; await the future for its result."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop or self._closing:
            self._follow(loop)
        future = loop.create_future()
        self._requests.put([(operation, args, future, False)])
        return future

    def write(self, operation: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Like `read`, for an operation that writes: it leaves at once if no trip with
        writes is out, else with the group that leaves when that trip is back."""
        loop = asyncio.get_running_loop()
        if loop is not self.loop or self._closing:
            self._follow(loop)
        future = loop.create_future()
        request = (operation, args, future, True)
        if self._out:
            self._waiting.append(request)
        else:
            self._out = True
            self._requests.put([request])
        return future

    async def close(self) -> None:
        """Run every request already made, then close the connection and end the thread."""
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
        self._out = bool(self._waiting)
        if self._waiting:
            left = [(op, args, loop.create_future(), True) for op, args, _, _ in self._waiting]
            self._waiting = []
            self._requests.put(left)

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
        self._requests.put(group)  # still out: this group's answer sends what waits next

    # -- in the thread ---------------------------------------------------------------------

    def _serve(
        self, connect: Callable[[], sqlite3.Connection], opened: asyncio.Future[None]
    ) -> None:
        """The thread's whole life: open the connection, then pass after pass until asked
        to close. (One function on purpose: the work of a pass is only `ops` calls.)"""
        try:
            conn = connect()
        except BaseException as exc:
            opened.get_loop().call_soon_threadsafe(self._answered, [(opened, False, exc)], False)
            return
        opened.get_loop().call_soon_threadsafe(self._answered, [(opened, True, None)], False)
        while True:
            batch = self._requests.get()  # sleeps until there is work
            while not self._requests.empty():  # this thread is the only taker
                batch += self._requests.get_nowait()
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
                try:
                    conn.close()
                    answers.append((stop[2], True, None))
                except Exception as exc:
                    answers.append((stop[2], False, exc))
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


def _stop(conn: sqlite3.Connection) -> None:
    """The last request (`close()`): the thread closes the connection and ends."""
