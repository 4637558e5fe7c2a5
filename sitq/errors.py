"""Typed errors: each names the problem and says how to fix it.

Everything sitq raises on purpose derives from `SitqError`, so callers can catch the whole
family, and each subclass also derives from the matching built-in (ValueError, LookupError...)
so code that already expects those keeps working.
"""

from __future__ import annotations

import sqlite3


class SitqError(Exception):
    """Base class for every error sitq raises on purpose."""


class SerializationError(SitqError, TypeError):
    """A task, argument or result cannot be turned into bytes (or back)."""


class PayloadTooLargeError(SitqError, ValueError):
    """A serialized task is bigger than the queue's `max_payload_bytes`."""


class TaskNotFoundError(SitqError, LookupError):
    """No task has this id in this queue's database."""


class InvalidTaskError(SitqError, TypeError):
    """What was enqueued is not something a worker can run."""


class InvalidOptionError(SitqError, ValueError):
    """A task option (delay, eta, timeout, priority...) has an impossible value."""


class QueueClosedError(SitqError, RuntimeError):
    """The queue (or its backend) was used before `connect()` or after `close()`."""


class TaskStateError(SitqError, RuntimeError):
    """The task is not in a state that allows this (e.g. requeue a running task)."""


class SchemaVersionError(SitqError, RuntimeError):
    """The database was written by a newer sitq than this one."""


class BackendError(SitqError, RuntimeError):
    """The storage cannot be opened or written (missing folder, read-only file...)."""


class StorageError(BackendError):
    """The storage refused an operation for a reason outside sitq; the message names the
    cause and the fix. Each subclass is also the database driver's own error class, so an
    `except sqlite3.OperationalError` written before these existed still catches it."""


class StorageBusyError(StorageError, sqlite3.OperationalError):
    """Another process held the database's write lock for longer than busy_timeout."""


class StorageFullError(StorageError, sqlite3.OperationalError):
    """The disk (or file system) holding the database is full: nothing was written."""


class DatabaseCorruptError(StorageError, sqlite3.DatabaseError):
    """The database file is damaged. No retry mends it: a worker stops (`sitq worker`
    exits with code 3) instead of failing the same way twice a second forever."""


class SignatureError(SitqError, ValueError):
    """A signed payload is unsigned or was changed after signing: it is never unpickled."""
