"""SQLite's raw errors, named: what went wrong with the file, and what to do about it.

`sqlite3.OperationalError: database is locked` says little to someone whose enqueue just
failed: locked by whom, for how long, and what now? `named` turns the errors whose cause
is outside sitq into typed errors (`sitq.errors.StorageError` and its subclasses) that say
which file, why, and the fix. They are still `sqlite3` errors too (see `sitq.errors`), so
existing `except sqlite3.OperationalError:` code keeps working. Other errors pass as they are.

The backend calls it in a plain `except` around each trip, not in a context manager: a
`try` costs next to nothing until something is raised (0.1 us a call, measured on a busy
machine), a `@contextmanager` several microseconds (5 us there), and an enqueue about six.
"""

from __future__ import annotations

import os
import sqlite3

from sitq.errors import DatabaseCorruptError, StorageBusyError, StorageError, StorageFullError


def named(exc: sqlite3.DatabaseError, path: str, busy_timeout: float) -> Exception:
    """What to raise for `exc`: the typed error `storage_error` makes of it (caused by
    `exc`), or `exc` itself (already typed, or not one of these)."""
    typed = None if isinstance(exc, StorageError) else storage_error(exc, path, busy_timeout)
    if typed is None:
        return exc
    typed.__cause__ = exc
    return typed


def is_busy(exc: sqlite3.DatabaseError) -> bool:
    """SQLite's "database is locked": another connection holds the write lock."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the extended code's primary part
    return code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) or "locked" in str(exc)


def storage_error(
    exc: sqlite3.DatabaseError, path: str, busy_timeout: float
) -> StorageError | None:
    """The typed error for `exc` on the database `path`, or None if it is not one of these."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # the extended code's primary part
    if code == sqlite3.SQLITE_NOTADB:
        return DatabaseCorruptError(
            f"{path!r} is not a usable SQLite database (SQLite: {exc}): it is another kind "
            "of file, or its first page is damaged. Check the path; if it is the queue, stop "
            "every worker and restore a backup."
        )
    if code == sqlite3.SQLITE_CORRUPT:
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
    if is_busy(exc):
        return StorageBusyError(
            f"the database file {path} is locked by another connection (most often another "
            f"process) for longer than busy_timeout={busy_timeout:g}s (SQLite: {exc}). "
            "Something holds a long write transaction (another program, a `sqlite3` shell "
            "left inside BEGIN, a backup): end it, or wait longer with "
            "SQLiteBackend(..., busy_timeout=SECONDS)."
        )
    return None
