"""Waiting for SQLite's write lock, and making up for the time nobody could write.

Each SQLiteBackend connection runs in its own thread (`sitq.backends.sqlite.thread`);
these functions run there, and only once a write has found the lock taken. A write waits
for the lock by looking every few milliseconds, up to the backend's busy_timeout. A wait
long enough to be an outage (another process holding the lock, a long checkpoint)
lengthens every running lease by its length, once the lock is ours.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

from sitq.backends.sqlite import sql


class _Waiting(threading.local):
    """How this connection's thread waits for the write lock, and an outage not yet made
    up for. (Class attributes are each thread's defaults.)"""

    waits: bool = False  # False: a thread never told to wait (the event loop's, trying a
    # short write: `sitq.backends.sqlite.thread`) gives up at once and records no outage
    seconds: float = 0.0  # how long a write waits for the lock (the busy_timeout)
    since: float | None = None  # when a wait began that nobody has made up for yet


#: SQLite's own busy handler sleeps up to 100 ms between looks, so a writer that releases
#: the lock for a moment may never be seen; we look every few milliseconds instead.
waiting = _Waiting()
LOCK_POLL_FIRST, LOCK_POLL_CAP = 0.0005, 0.005  # seconds between two tries for the lock
#: What SQLite itself is told to wait (busy_timeout, in ms): a moment; we do the waiting.
SQLITE_BUSY_MS = 1


def wait_for_lock_up_to(conn: sqlite3.Connection, seconds: float) -> None:
    """Runs in the connection's thread: writes wait for the lock up to `seconds`, looking
    every few ms (SQLite itself is told to wait only a moment: we do the waiting)."""
    waiting.waits = True
    waiting.seconds = seconds
    conn.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")


def wait_for_lock(
    conn: sqlite3.Connection, statement: str, params: Any, refused: sqlite3.OperationalError
) -> sqlite3.Cursor:
    """`statement` (BEGIN IMMEDIATE, or one autocommit write) was `refused`: if another
    connection holds the write lock, try again every few ms, up to the connection's busy
    timeout. An attempt that gives up leaves the outage's start behind: the first write
    that gets through, even calls later, makes up for all of it (`ops.take_the_lock`)."""
    if "locked" not in str(refused) or not waiting.waits:
        raise refused
    started = time.monotonic()
    deadline = started + waiting.seconds
    if waiting.since is None:
        waiting.since = started
    pause = LOCK_POLL_FIRST
    while True:
        if time.monotonic() + pause > deadline:
            raise refused
        time.sleep(pause)
        pause = min(pause * 2, LOCK_POLL_CAP)
        try:
            cursor = conn.execute(statement, params)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            refused = exc
        else:
            make_up_for_outage(conn)
            return cursor


def make_up_for_outage(conn: sqlite3.Connection) -> None:
    """This connection got the write lock after waiting sql.OUTAGE_AT_LEAST or more: while it
    waited nobody could write, so no worker could renew a lease either. Every lease still
    running is lengthened by the wait, in the lock's own transaction: a lease judged
    after an outage is judged by the time the database was writable, and one that ran out
    during the outage is alive again (one long dead stays expired).

    Renewing on the storage side is the only fair judge: the owner's heartbeat is waiting
    for the same lock, and whichever connection gets it first after the outage (often an
    idle worker's claim) would otherwise find the owner's lease expired. Each connection
    that waited makes up for its own wait, so several waiters may lengthen a lease by
    more than the outage: a dead worker's task is then taken over that much later."""
    since = waiting.since
    if since is None:
        return
    outage = time.monotonic() - since
    if outage >= sql.OUTAGE_AT_LEAST:
        try:
            conn.execute(sql.MAKE_UP_FOR_OUTAGE, (outage,))
        except sqlite3.OperationalError:
            return  # the lock went to another between two statements: the next write
    waiting.since = None
