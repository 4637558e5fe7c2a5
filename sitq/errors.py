"""Typed errors: each names the problem and says how to fix it.

Everything sitq raises on purpose derives from `SitqError`, so callers can catch the whole
family, and each subclass also derives from the matching built-in (ValueError, LookupError...)
so code that already expects those keeps working.
"""

from __future__ import annotations

import sqlite3


class SitqError(Exception):
    """Base class for every error sitq raises on purpose."""


class SitqWarning(UserWarning):
    """Code that runs but almost certainly does not do what it means (e.g. comparing a
    status with the original sitq's "success")."""


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


class InvalidScheduleError(InvalidOptionError):
    """A periodic task's schedule is impossible: a bad cron expression, an interval that is
    not positive, both `every=` and `cron=` (or neither), an unknown time zone."""


class QueueClosedError(SitqError, RuntimeError):
    """The queue (or its backend) was used before `connect()` or after `close()`."""


class TaskStateError(SitqError, RuntimeError):
    """The task is not in a state that allows this (e.g. requeue a running task)."""


class UniqueKeyTakenError(TaskStateError):
    """A task cannot be requeued: another unfinished task holds its unique key now."""

    def __init__(self, message: str, *, task_id: str, key: str, holder: str) -> None:
        super().__init__(message)
        self.task_id, self.key, self.holder = task_id, key, holder

    @classmethod
    def of(cls, task_id: str, key: str, holder: str) -> UniqueKeyTakenError:
        return cls(
            f"task {task_id} was not requeued: its unique key {key!r} is held by unfinished "
            f"task {holder}. Cancel that task or let it finish, then requeue this one (or "
            "enqueue the work again)",
            task_id=task_id,
            key=key,
            holder=holder,
        )


class SchemaVersionError(SitqError, RuntimeError):
    """The database was written by a newer sitq than this one."""


class BackendError(SitqError, RuntimeError):
    """The storage cannot be opened or written (missing folder, read-only file...)."""


class QueueNotFoundError(BackendError, LookupError):
    """No queue where the URL points, and none may be made there: a PostgreSQL schema
    without sitq's tables opened with `create=False` (`schema` names it), or a database
    the server does not have (`schema` is None: sitq never creates databases)."""

    def __init__(self, message: str, *, schema: str | None = None) -> None:
        super().__init__(message)
        self.schema = schema


class IncompleteBackendError(SitqError, TypeError):
    """An object given as a backend lacks operations of `sitq.backends.Backend`."""


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


#: The name sitq installs under: "sitq" on the package index is another project.
DISTRIBUTION = "sitq-queue"


class MissingExtraError(SitqError, ModuleNotFoundError):
    """A part of sitq needs a package that only one of its extras installs (plots,
    notebook, postgres): the core install stays small, and this says which extra to add."""

    @classmethod
    def needs(cls, extra: str, what: str, exc: ImportError) -> MissingExtraError:
        """The error for `what` when importing a package of `extra` failed with `exc`."""
        return cls(
            f"{what} needs {exc.name or 'a package'!r}, which the core install leaves out: "
            f'pip install "{DISTRIBUTION}[{extra}]" ({exc})',
            name=exc.name,
        )


class EventLoopError(SitqError, RuntimeError):
    """A queue, backend or worker was used from an event loop it cannot move to: the loop
    that opened it still runs (in another thread), or an in-memory database died with it."""
