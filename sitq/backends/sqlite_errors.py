"""SQLite's raw errors, named: what went wrong with the file, and what to do about it.

`sqlite3.OperationalError: database is locked` says little to someone whose enqueue just
failed: locked by whom, for how long, and what now? `named` turns the errors whose cause
is outside sitq into typed errors (`sitq.errors.StorageError` and its subclasses) that say
which file, why, and the fix. They are still `sqlite3` errors too (see `sitq.errors`), so
existing `except sqlite3.OperationalError:` code keeps working. Other errors pass as they are.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from sitq.errors import DatabaseCorruptError, StorageBusyError, StorageError, StorageFullError

#: SQLite's primary result codes for a damaged file: SQLITE_CORRUPT and SQLITE_NOTADB.
CORRUPT_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


@contextmanager
def named(path: str, busy_timeout: float) -> Iterator[None]:
    """Raise a SQLite error from the body as the typed error `storage_error` makes of it."""
    try:
        yield
    except StorageError:
        raise
    except sqlite3.DatabaseError as exc:
        typed = storage_error(exc, path, busy_timeout)
        if typed is None:
            raise
        raise typed from exc


def storage_error(
    exc: sqlite3.DatabaseError, path: str, busy_timeout: float
) -> StorageError | None:
    """The typed error for `exc` on the database `path`, or None if it is not one of these."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the extended code's primary part
    if code in CORRUPT_CODES:
        return DatabaseCorruptError(
            f"the database file {path} is damaged (SQLite: {exc}). Retrying will not mend "
            f"it: stop every worker, keep a copy of the file, then restore a backup or "
            f"rescue what is readable with `sqlite3 {path} .recover > rescued.sql`."
        )
    if code == sqlite3.SQLITE_FULL:
        folder = os.path.dirname(os.path.abspath(path))
        return StorageFullError(
            f"the disk holding {path} is full (SQLite: {exc}); nothing was written. Free "
            f"space on the file system of {folder} (or move the queue to a bigger disk), "
            "then try again."
        )
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc):
        return StorageBusyError(
            f"the database file {path} is locked by another connection (most often another "
            f"process) for longer than busy_timeout={busy_timeout:g}s (SQLite: {exc}). "
            "Something holds a long write transaction (another program, a `sqlite3` shell "
            "left inside BEGIN, a backup): end it, or wait longer with "
            "SQLiteBackend(..., busy_timeout=SECONDS)."
        )
    return None
