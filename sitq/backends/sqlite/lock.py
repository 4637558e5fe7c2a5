"""Waiting for SQLite's write lock, and making up for the time nobody could write.

Each SQLiteBackend connection runs in its own aiosqlite thread; these functions run there.
A write waits for the lock by looking every few milliseconds, up to the backend's
busy_timeout. A wait long enough to be an outage (another process holding the lock, a
long checkpoint) lengthens every running lease by its length, once the lock is ours.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sitq.backends.sqlite import sql

T = TypeVar("T")


#: How this connection's thread waits for the write lock (set once by `wait_for_lock_up_to`).
#: SQLite's own busy handler sleeps up to 100 ms between looks, so a writer that releases
#: the lock for a moment may never be seen; we look every few milliseconds instead.
_lock_wait = threading.local()
LOCK_POLL_FIRST, LOCK_POLL_CAP = 0.0005, 0.005  # seconds between two tries for the lock


def wait_for_lock_up_to(conn: sqlite3.Connection, seconds: float) -> None:
    """Runs in the connection's thread: writes wait for the lock up to `seconds`, looking
    every few ms (SQLite itself is told to wait only a moment: we do the waiting)."""
    _lock_wait.seconds = seconds
    conn.execute("PRAGMA busy_timeout = 1")


def with_the_lock(conn: sqlite3.Connection, action: Callable[[], T]) -> T:
    """Run `action` (BEGIN IMMEDIATE, or one autocommit write), trying again while another
    connection holds the write lock, up to the connection's busy timeout. An attempt that
    gives up leaves the outage's start behind: the first write that gets through, even
    calls later, makes up for all of it."""
    started = time.monotonic()
    deadline = started + getattr(_lock_wait, "seconds", 0.0)
    pause = LOCK_POLL_FIRST
    while True:
        try:
            result = action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            if getattr(_lock_wait, "blocked_since", None) is None:
                _lock_wait.blocked_since = started
            if time.monotonic() + pause > deadline:
                raise
        else:
            make_up_for_outage(conn)
            return result
        time.sleep(pause)
        pause = min(pause * 2, LOCK_POLL_CAP)


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
    since = getattr(_lock_wait, "blocked_since", None)
    if since is None:
        return
    outage = time.monotonic() - since
    if outage >= sql.OUTAGE_AT_LEAST:
        try:
            conn.execute(sql.MAKE_UP_FOR_OUTAGE, (outage,))
        except sqlite3.OperationalError:
            return  # the lock went to another between two statements: the next write
    _lock_wait.blocked_since = None
